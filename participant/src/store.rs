//! The participant's embedded store (redb): its own labelled examples and the model it serves.
//!
//! The examples never leave this store except as model updates. Every value is envelope-encrypted under
//! the node's key-encryption key ([`NodeKeys::seal`]) and bound to its row (`hearth/participant/
//! example/<key>`, `hearth/participant/model/served`), so the database file holds no customer text and
//! no model in the clear, and a row cannot be moved to another key. After a KEK rotation new rows use the
//! new version while older rows still open ([`Store::kek_versions`] counts rows per version). Imports
//! append; each example keeps the sequence number it was imported under.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use hearth_crypto::envelope::kek_of;
use hearth_models::Example;
use hearth_node::keys::NodeKeys;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

const EXAMPLES: TableDefinition<u64, &[u8]> = TableDefinition::new("examples");
const MODEL: TableDefinition<&str, &[u8]> = TableDefinition::new("model");
/// The store's file name inside the data directory.
pub const STORE_FILE: &str = "participant.redb";

/// Errors of the participant store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened, read or written.
    #[error("participant store: {0}")]
    Db(String),
    /// A stored example could not be decoded or opened.
    #[error("participant store: example {key} is corrupt: {reason}")]
    Corrupt {
        /// Its key.
        key: u64,
        /// What was wrong.
        reason: String,
    },
    /// A value could not be sealed or opened (the KEK it names is missing, or it was altered).
    #[error("participant store: {0}")]
    Sealed(String),
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

fn example_object(key: u64) -> String {
    format!("hearth/participant/example/{key}")
}

const MODEL_OBJECT: &str = "hearth/participant/model/served";

/// A participant's database file.
#[derive(Debug)]
pub struct Store {
    db: Database,
    keys: Arc<NodeKeys>,
}

impl Store {
    /// Opens or creates the store in `dir` (`dir/participant.redb`), sealing and opening with `keys`.
    pub fn open(dir: &Path, keys: Arc<NodeKeys>) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Db(format!("creating {}: {e}", dir.display())))?;
        let db = Database::create(dir.join(STORE_FILE)).map_err(db_err)?;
        let tx = db.begin_write().map_err(db_err)?;
        tx.open_table(EXAMPLES).map_err(db_err)?;
        tx.open_table(MODEL).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(Self { db, keys })
    }

    /// Appends `examples` in one transaction; returns how many the store now holds.
    pub fn import(&self, examples: &[Example]) -> Result<u64, StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let total = {
            let mut t = tx.open_table(EXAMPLES).map_err(db_err)?;
            let first = t.last().map_err(db_err)?.map_or(0, |(k, _)| k.value() + 1);
            for (key, ex) in (first..).zip(examples) {
                let json = zeroize::Zeroizing::new(serde_json::to_vec(ex).map_err(db_err)?);
                let sealed = self
                    .keys
                    .seal(&example_object(key), &json)
                    .map_err(|e| StoreError::Sealed(e.to_string()))?;
                t.insert(key, sealed.as_slice()).map_err(db_err)?;
            }
            t.len().map_err(db_err)?
        };
        tx.commit().map_err(db_err)?;
        Ok(total)
    }

    fn decode(&self, key: u64, sealed: &[u8]) -> Result<Example, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt { key, reason };
        let json =
            self.keys.open_sealed_object(&example_object(key), sealed).map_err(|e| corrupt(e.to_string()))?;
        serde_json::from_slice(&json).map_err(|e| corrupt(e.to_string()))
    }

    /// Every stored example, in import order.
    pub fn examples(&self) -> Result<Vec<Example>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(EXAMPLES).map_err(db_err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            out.push(self.decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// How many examples are stored.
    pub fn count(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(EXAMPLES).map_err(db_err)?;
        t.len().map_err(db_err)
    }

    /// Deletes the examples `select` picks (all of them with `None`); returns how many were deleted.
    pub fn delete(&self, select: Option<&dyn Fn(&Example) -> bool>) -> Result<u64, StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let deleted = {
            let mut t = tx.open_table(EXAMPLES).map_err(db_err)?;
            let mut doomed = Vec::new();
            for row in t.iter().map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                let key = k.value();
                if select.is_none_or(|f| self.decode(key, v.value()).is_ok_and(|e| f(&e))) {
                    doomed.push(key);
                }
            }
            for key in &doomed {
                t.remove(key).map_err(db_err)?;
            }
            doomed.len() as u64
        };
        tx.commit().map_err(db_err)?;
        Ok(deleted)
    }

    /// How many stored values (examples and the model) each KEK version sealed: after a rotation, the
    /// rows still under an older version.
    pub fn kek_versions(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let mut out = BTreeMap::new();
        let mut count = |sealed: &[u8]| -> Result<(), StoreError> {
            let kek = kek_of(sealed).map_err(|e| StoreError::Sealed(e.to_string()))?;
            *out.entry(kek.to_string()).or_insert(0) += 1;
            Ok(())
        };
        for row in tx.open_table(EXAMPLES).map_err(db_err)?.iter().map_err(db_err)? {
            count(row.map_err(db_err)?.1.value())?;
        }
        for row in tx.open_table(MODEL).map_err(db_err)?.iter().map_err(db_err)? {
            count(row.map_err(db_err)?.1.value())?;
        }
        Ok(out)
    }

    /// Stores the served model file, replacing the previous one.
    pub fn save_model(&self, file: &[u8]) -> Result<(), StoreError> {
        let sealed = self.keys.seal(MODEL_OBJECT, file).map_err(|e| StoreError::Sealed(e.to_string()))?;
        let tx = self.db.begin_write().map_err(db_err)?;
        tx.open_table(MODEL).map_err(db_err)?.insert("served", sealed.as_slice()).map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    /// The served model file, if one was stored.
    pub fn load_model(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(MODEL).map_err(db_err)?;
        let Some(v) = t.get("served").map_err(db_err)? else { return Ok(None) };
        let plain = self
            .keys
            .open_sealed_object(MODEL_OBJECT, v.value())
            .map_err(|e| StoreError::Sealed(e.to_string()))?;
        Ok(Some(plain.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use hearth_node::config::KeystoreConfig;
    use hearth_node::keys::{Create, KEK, PARTICIPANT_KEYS};

    use super::*;

    fn keys(dir: &Path) -> Arc<NodeKeys> {
        let pass = dir.join("pass");
        std::fs::write(&pass, "store test").unwrap();
        let cfg = KeystoreConfig {
            passphrase_file: Some(pass),
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            ..Default::default()
        };
        let suite = hearth_crypto::SuiteId::International;
        Arc::new(NodeKeys::open(&cfg, suite, dir, PARTICIPANT_KEYS, Create::IfMissing, None).unwrap().0)
    }

    #[test]
    fn imports_append_survive_reopen_and_stay_sealed_across_a_kek_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys(dir.path());
        let ex = |t: &str| Example { text: t.into(), label: "greet".into() };
        {
            let store = Store::open(dir.path(), Arc::clone(&keys)).unwrap();
            assert_eq!(store.import(&[ex("hi there, my card was stolen"), ex("hello")]).unwrap(), 2);
            store.save_model(b"model-bytes").unwrap();
        }
        keys.rotate(KEK).unwrap();
        {
            let store = Store::open(dir.path(), Arc::clone(&keys)).unwrap();
            assert_eq!(store.import(&[ex("你好")]).unwrap(), 3);
            let versions = store.kek_versions().unwrap();
            assert_eq!(versions.get("kek@v1"), Some(&3), "two old rows and the model");
            assert_eq!(versions.get("kek@v2"), Some(&1), "the new row");
        }
        let raw = std::fs::read(dir.path().join(STORE_FILE)).unwrap();
        for needle in ["my card was stolen", "model-bytes", "你好"] {
            assert!(!raw.windows(needle.len()).any(|w| w == needle.as_bytes()), "{needle} in the clear");
        }
        let store = Store::open(dir.path(), keys).unwrap();
        let all = store.examples().unwrap();
        assert_eq!(
            all.iter().map(|e| e.text.as_str()).collect::<Vec<_>>(),
            ["hi there, my card was stolen", "hello", "你好"]
        );
        assert_eq!(store.load_model().unwrap().as_deref(), Some(&b"model-bytes"[..]));
        assert_eq!(store.delete(Some(&|e: &Example| e.text == "hello")).unwrap(), 1);
        assert_eq!(store.count().unwrap(), 2);
        assert_eq!(store.delete(None).unwrap(), 2);
        assert_eq!(store.count().unwrap(), 0);
    }
}

//! The participant's embedded store (redb): its own labelled examples and the model it serves.
//!
//! The examples never leave this store except as model updates. Imports append; each example keeps the
//! sequence number it was imported under.

use std::path::Path;

use hearth_models::Example;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

const EXAMPLES: TableDefinition<u64, &[u8]> = TableDefinition::new("examples");
const MODEL: TableDefinition<&str, &[u8]> = TableDefinition::new("model");

/// Errors of the participant store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened, read or written.
    #[error("participant store: {0}")]
    Db(String),
    /// A stored example could not be decoded.
    #[error("participant store: example {key} is corrupt: {reason}")]
    Corrupt {
        /// Its key.
        key: u64,
        /// What was wrong.
        reason: String,
    },
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

/// A participant's database file.
#[derive(Debug)]
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens or creates the store in `dir` (`dir/participant.redb`).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Db(format!("creating {}: {e}", dir.display())))?;
        let db = Database::create(dir.join("participant.redb")).map_err(db_err)?;
        let tx = db.begin_write().map_err(db_err)?;
        tx.open_table(EXAMPLES).map_err(db_err)?;
        tx.open_table(MODEL).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(Self { db })
    }

    /// Appends `examples` in one transaction; returns how many the store now holds.
    pub fn import(&self, examples: &[Example]) -> Result<u64, StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let total = {
            let mut t = tx.open_table(EXAMPLES).map_err(db_err)?;
            let first = t.last().map_err(db_err)?.map_or(0, |(k, _)| k.value() + 1);
            for (key, ex) in (first..).zip(examples) {
                let json = serde_json::to_vec(ex).map_err(db_err)?;
                t.insert(key, json.as_slice()).map_err(db_err)?;
            }
            t.len().map_err(db_err)?
        };
        tx.commit().map_err(db_err)?;
        Ok(total)
    }

    /// Every stored example, in import order.
    pub fn examples(&self) -> Result<Vec<Example>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(EXAMPLES).map_err(db_err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let ex = serde_json::from_slice(v.value())
                .map_err(|e| StoreError::Corrupt { key: k.value(), reason: e.to_string() })?;
            out.push(ex);
        }
        Ok(out)
    }

    /// How many examples are stored.
    pub fn count(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(EXAMPLES).map_err(db_err)?;
        t.len().map_err(db_err)
    }

    /// Stores the served model file, replacing the previous one.
    pub fn save_model(&self, file: &[u8]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        tx.open_table(MODEL).map_err(db_err)?.insert("served", file).map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    /// The served model file, if one was stored.
    pub fn load_model(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(MODEL).map_err(db_err)?;
        Ok(t.get("served").map_err(db_err)?.map(|v| v.value().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_append_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ex = |t: &str| Example { text: t.into(), label: "greet".into() };
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.import(&[ex("hi"), ex("hello")]).unwrap(), 2);
            assert_eq!(store.import(&[ex("你好")]).unwrap(), 3);
            store.save_model(b"model-bytes").unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let all = store.examples().unwrap();
        assert_eq!(all.iter().map(|e| e.text.as_str()).collect::<Vec<_>>(), ["hi", "hello", "你好"]);
        assert_eq!(store.load_model().unwrap().as_deref(), Some(&b"model-bytes"[..]));
    }
}

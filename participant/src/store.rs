//! The participant's embedded store (redb): its own data, one table per model family (labelled
//! conversations for intent, conversations with emotion labels, purchase transactions for the
//! recommender), and the model it serves for each family.
//!
//! The data never leaves this store except as model updates. Every value is envelope-encrypted under
//! the node's key-encryption key ([`NodeKeys::seal`]) and bound to its row (`hearth/participant/
//! example/<key>`, `hearth/participant/<table>/<key>`, `hearth/participant/model/served[/<family>]`),
//! so the database file holds no customer text, no purchase and no model in the clear, and a row
//! cannot be moved to another key. After a KEK rotation new rows use the new version while older rows
//! still open ([`Store::kek_versions`] counts rows per version). Imports append; each row keeps the
//! sequence number it was imported under.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use hearth_models::recommend::data::Transaction;
use hearth_models::{EmotionExample, Example};
use hearth_node::keys::NodeKeys;
use hearth_node::rewrap::{add_counts, count_by_kek, rewrap_table, TableRewrap};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

const EXAMPLES: TableDefinition<u64, &[u8]> = TableDefinition::new("examples");
const EMOTION_EXAMPLES: TableDefinition<u64, &[u8]> = TableDefinition::new("emotion_examples");
const TRANSACTIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("transactions");
/// The encoder tier's sentence embedding of each intent example, under the example's own key: computed
/// once (at import, or when an encoder-tier job first needs it) and sealed like the text it comes from.
const EXAMPLE_EMBEDDINGS: TableDefinition<u64, &[u8]> = TableDefinition::new("example_embeddings");
const MODEL: TableDefinition<&str, &[u8]> = TableDefinition::new("model");
/// This institution's own privacy ledger and what it contributed to which round (`privacy`).
const PRIVACY: TableDefinition<&str, &[u8]> = TableDefinition::new("privacy");
/// The tables of rows, each with the prefix of its rows' object names.
const ROW_TABLES: [(TableDefinition<u64, &[u8]>, &str); 4] = [
    (EXAMPLES, "hearth/participant/example"),
    (EXAMPLE_EMBEDDINGS, "hearth/participant/example_embedding"),
    (EMOTION_EXAMPLES, "hearth/participant/emotion_examples"),
    (TRANSACTIONS, "hearth/participant/transactions"),
];
/// The store's file name inside the data directory.
pub const STORE_FILE: &str = "participant.redb";

/// The key of a family's served model in the `model` table; intent keeps the key it had before families.
fn model_key(family: &str) -> String {
    if family == "intent" {
        "served".to_string()
    } else {
        format!("served/{family}")
    }
}

/// The object name a family's model is sealed under.
fn model_object(family: &str) -> String {
    format!("hearth/participant/model/{}", model_key(family))
}

/// The object name privacy state `key` is sealed under.
fn privacy_object(key: &str) -> String {
    format!("hearth/participant/privacy/{key}")
}

/// The object name row `key` of `table` is sealed under.
fn row_object(table: TableDefinition<u64, &[u8]>, key: u64) -> String {
    let name = redb::TableHandle::name(&table);
    let prefix = ROW_TABLES
        .iter()
        .find(|(t, _)| redb::TableHandle::name(t) == name)
        .map_or("hearth/participant/unknown", |(_, p)| p);
    format!("{prefix}/{key}")
}

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
    /// A stored row of another table could not be decoded or opened.
    #[error("participant store: row {key} of {table} is corrupt: {reason}")]
    CorruptRow {
        /// The table.
        table: String,
        /// The row's key.
        key: u64,
        /// What was wrong.
        reason: String,
    },
    /// A value could not be sealed or opened (the KEK it names is missing, or it was altered).
    #[error("participant store: {0}")]
    Sealed(String),
    /// Moving objects to the current key-encryption key version failed (what was done stays done).
    #[error("participant store: {0}")]
    Rewrap(#[from] hearth_node::rewrap::RewrapError),
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

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
        for (table, _) in ROW_TABLES {
            tx.open_table(table).map_err(db_err)?;
        }
        tx.open_table(MODEL).map_err(db_err)?;
        tx.open_table(PRIVACY).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(Self { db, keys })
    }

    /// Appends `examples` in one transaction; returns how many the store now holds.
    pub fn import(&self, examples: &[Example]) -> Result<u64, StoreError> {
        self.append(EXAMPLES, examples)
    }

    fn decode<T: DeserializeOwned>(
        &self,
        table: TableDefinition<u64, &[u8]>,
        key: u64,
        sealed: &[u8],
    ) -> Result<T, StoreError> {
        let corrupt = |reason: String| {
            if redb::TableHandle::name(&table) == redb::TableHandle::name(&EXAMPLES) {
                StoreError::Corrupt { key, reason }
            } else {
                StoreError::CorruptRow { table: redb::TableHandle::name(&table).to_string(), key, reason }
            }
        };
        let json = self
            .keys
            .open_sealed_object(&row_object(table, key), sealed)
            .map_err(|e| corrupt(e.to_string()))?;
        serde_json::from_slice(&json).map_err(|e| corrupt(e.to_string()))
    }

    /// Every stored example, in import order.
    pub fn examples(&self) -> Result<Vec<Example>, StoreError> {
        self.read_all(EXAMPLES)
    }

    /// Every stored example, in import order, with its sentence embedding attached where one is stored.
    pub fn examples_embedded(&self) -> Result<Vec<Example>, StoreError> {
        Ok(self.keyed_examples()?.into_iter().map(|(_, e)| e).collect())
    }

    /// The keys and texts of the intent examples with no stored embedding, in import order.
    pub fn unembedded(&self) -> Result<Vec<(u64, String)>, StoreError> {
        let keyed = self.keyed_examples()?;
        Ok(keyed.into_iter().filter(|(_, e)| e.embedding.is_none()).map(|(k, e)| (k, e.text)).collect())
    }

    /// Every stored example with its key, its embedding attached where one is stored: the one place the
    /// examples and their embeddings are read together.
    fn keyed_examples(&self) -> Result<Vec<(u64, Example)>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let rows = tx.open_table(EXAMPLES).map_err(db_err)?;
        let embeddings = tx.open_table(EXAMPLE_EMBEDDINGS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let key = k.value();
            let mut example: Example = self.decode(EXAMPLES, key, v.value())?;
            if let Some(sealed) = embeddings.get(key).map_err(db_err)? {
                example.embedding = Some(self.open_embedding(key, sealed.value())?.into());
            }
            out.push((key, example));
        }
        Ok(out)
    }

    /// Stores the embeddings of the intent examples `rows` names (key, embedding), sealed, in one
    /// transaction. A key with no example (deleted meanwhile) is skipped.
    pub fn save_embeddings(&self, rows: &[(u64, Vec<f32>)]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let examples = tx.open_table(EXAMPLES).map_err(db_err)?;
            let mut t = tx.open_table(EXAMPLE_EMBEDDINGS).map_err(db_err)?;
            for (key, embedding) in rows {
                if examples.get(*key).map_err(db_err)?.is_none() {
                    continue;
                }
                let bytes: Vec<u8> = embedding.iter().flat_map(|v| v.to_le_bytes()).collect();
                let sealed = self
                    .keys
                    .seal(&row_object(EXAMPLE_EMBEDDINGS, *key), &bytes)
                    .map_err(|e| StoreError::Sealed(e.to_string()))?;
                t.insert(*key, sealed.as_slice()).map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)
    }

    fn open_embedding(&self, key: u64, sealed: &[u8]) -> Result<Vec<f32>, StoreError> {
        let corrupt =
            |reason: String| StoreError::CorruptRow { table: "example_embeddings".into(), key, reason };
        let bytes = self
            .keys
            .open_sealed_object(&row_object(EXAMPLE_EMBEDDINGS, key), sealed)
            .map_err(|e| corrupt(e.to_string()))?;
        if bytes.len() != hearth_models::encoder::EMBEDDING_DIM * 4 {
            return Err(corrupt(format!("{} bytes, not one embedding", bytes.len())));
        }
        Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }

    /// How many examples are stored.
    pub fn count(&self) -> Result<u64, StoreError> {
        self.len(EXAMPLES)
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
                if select.is_none_or(|f| self.decode(EXAMPLES, key, v.value()).is_ok_and(|e: Example| f(&e)))
                {
                    doomed.push(key);
                }
            }
            let mut embeddings = tx.open_table(EXAMPLE_EMBEDDINGS).map_err(db_err)?;
            for key in &doomed {
                t.remove(key).map_err(db_err)?;
                embeddings.remove(key).map_err(db_err)?;
            }
            doomed.len() as u64
        };
        tx.commit().map_err(db_err)?;
        Ok(deleted)
    }

    /// How many stored values (rows of every table and the models) each KEK version sealed: after a
    /// rotation, the rows still under an older version.
    pub fn kek_versions(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut out = BTreeMap::new();
        for (table, _) in ROW_TABLES {
            add_counts(&mut out, count_by_kek(&self.db, table)?);
        }
        for table in [MODEL, PRIVACY] {
            add_counts(&mut out, count_by_kek(&self.db, table)?);
        }
        Ok(out)
    }

    /// Seals every value still under an older key-encryption key version again under the current one,
    /// `batch` per transaction, reporting after each; resumable (see [`hearth_node::rewrap`]).
    pub fn rewrap(
        &self,
        batch: usize,
        progress: &mut dyn FnMut(&TableRewrap),
    ) -> Result<Vec<TableRewrap>, StoreError> {
        let mut done = Vec::new();
        for (table, _) in ROW_TABLES {
            done.push(rewrap_table(&self.db, &self.keys, table, &|k| row_object(table, k), batch, progress)?);
        }
        let model = |k: &str| format!("hearth/participant/model/{k}");
        done.push(rewrap_table(&self.db, &self.keys, MODEL, &model, batch, progress)?);
        done.push(rewrap_table(&self.db, &self.keys, PRIVACY, &privacy_object, batch, progress)?);
        Ok(done)
    }

    /// Stores the served intent model file, replacing the previous one.
    pub fn save_model(&self, file: &[u8]) -> Result<(), StoreError> {
        self.save_model_of("intent", file)
    }

    /// The served intent model file, if one was stored.
    pub fn load_model(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.load_model_of("intent")
    }

    /// Stores the served model file of `family`, replacing the previous one.
    pub fn save_model_of(&self, family: &str, file: &[u8]) -> Result<(), StoreError> {
        let sealed =
            self.keys.seal(&model_object(family), file).map_err(|e| StoreError::Sealed(e.to_string()))?;
        let tx = self.db.begin_write().map_err(db_err)?;
        tx.open_table(MODEL)
            .map_err(db_err)?
            .insert(model_key(family).as_str(), sealed.as_slice())
            .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    /// The served model file of `family`, if one was stored.
    pub fn load_model_of(&self, family: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(MODEL).map_err(db_err)?;
        let Some(v) = t.get(model_key(family).as_str()).map_err(db_err)? else { return Ok(None) };
        let plain = self
            .keys
            .open_sealed_object(&model_object(family), v.value())
            .map_err(|e| StoreError::Sealed(e.to_string()))?;
        Ok(Some(plain.to_vec()))
    }

    /// Stores the privacy state `key` (sealed), replacing the previous one.
    pub fn save_privacy(&self, key: &str, json: &[u8]) -> Result<(), StoreError> {
        let object = privacy_object(key);
        let sealed = self.keys.seal(&object, json).map_err(|e| StoreError::Sealed(e.to_string()))?;
        let tx = self.db.begin_write().map_err(db_err)?;
        tx.open_table(PRIVACY).map_err(db_err)?.insert(key, sealed.as_slice()).map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    /// The privacy state `key`, if one was stored.
    pub fn load_privacy(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(PRIVACY).map_err(db_err)?;
        let Some(v) = t.get(key).map_err(db_err)? else { return Ok(None) };
        let object = privacy_object(key);
        let plain = self
            .keys
            .open_sealed_object(&object, v.value())
            .map_err(|e| StoreError::Sealed(e.to_string()))?;
        Ok(Some(plain.to_vec()))
    }

    /// Appends emotion examples in one transaction; returns how many the store now holds.
    pub fn import_emotion(&self, examples: &[EmotionExample]) -> Result<u64, StoreError> {
        self.append(EMOTION_EXAMPLES, examples)
    }

    /// Every stored emotion example, in import order.
    pub fn emotion_examples(&self) -> Result<Vec<EmotionExample>, StoreError> {
        self.read_all(EMOTION_EXAMPLES)
    }

    /// How many emotion examples are stored.
    pub fn emotion_count(&self) -> Result<u64, StoreError> {
        self.len(EMOTION_EXAMPLES)
    }

    /// Appends purchase transactions (cancellations included: they are netted when training) in one
    /// transaction; returns how many the store now holds.
    pub fn import_transactions(&self, rows: &[Transaction]) -> Result<u64, StoreError> {
        self.append(TRANSACTIONS, rows)
    }

    /// Every stored transaction, in import order.
    pub fn transactions(&self) -> Result<Vec<Transaction>, StoreError> {
        self.read_all(TRANSACTIONS)
    }

    /// How many transactions are stored.
    pub fn transaction_count(&self) -> Result<u64, StoreError> {
        self.len(TRANSACTIONS)
    }

    /// Appends `rows` as sealed JSON under the next sequence numbers of `table`, in one transaction. The
    /// one place a row is written.
    fn append<T: Serialize>(
        &self,
        table: TableDefinition<u64, &[u8]>,
        rows: &[T],
    ) -> Result<u64, StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let total = {
            let mut t = tx.open_table(table).map_err(db_err)?;
            let first = t.last().map_err(db_err)?.map_or(0, |(k, _)| k.value() + 1);
            for (key, row) in (first..).zip(rows) {
                let json = zeroize::Zeroizing::new(serde_json::to_vec(row).map_err(db_err)?);
                let sealed = self
                    .keys
                    .seal(&row_object(table, key), &json)
                    .map_err(|e| StoreError::Sealed(e.to_string()))?;
                t.insert(key, sealed.as_slice()).map_err(db_err)?;
            }
            t.len().map_err(db_err)?
        };
        tx.commit().map_err(db_err)?;
        Ok(total)
    }

    /// Every row of `table`, in key order. The one place a row is read.
    fn read_all<T: DeserializeOwned>(
        &self,
        table: TableDefinition<u64, &[u8]>,
    ) -> Result<Vec<T>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(table).map_err(db_err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            out.push(self.decode(table, k.value(), v.value())?);
        }
        Ok(out)
    }

    fn len(&self, table: TableDefinition<u64, &[u8]>) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(table).map_err(db_err)?;
        t.len().map_err(db_err)
    }
}

/// A participant's keys in a fast sealed keystore under `dir`, for tests.
#[cfg(test)]
pub(crate) fn test_keys(dir: &Path) -> Arc<NodeKeys> {
    tests::keys(dir)
}

#[cfg(test)]
mod tests {
    use hearth_node::config::KeystoreConfig;
    use hearth_node::keys::{Create, KEK, PARTICIPANT_KEYS};

    use super::*;

    pub(super) fn keys(dir: &Path) -> Arc<NodeKeys> {
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
        let ex = |t: &str| Example { text: t.into(), label: "greet".into(), embedding: None };
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
        // A rewrap moves the old rows and the model to v2; everything still opens as itself.
        store.save_privacy("ledger", b"{}").unwrap();
        let done = store.rewrap(1, &mut |_| {}).unwrap();
        assert_eq!(done.iter().map(|t| t.moved).sum::<u64>(), 3, "{done:?}");
        assert_eq!(store.kek_versions().unwrap(), BTreeMap::from([("kek@v2".to_string(), 5)]));
        assert_eq!(store.examples().unwrap().len(), 3);
        assert_eq!(store.load_model().unwrap().as_deref(), Some(&b"model-bytes"[..]));
        assert_eq!(store.load_privacy("ledger").unwrap().as_deref(), Some(&b"{}"[..]));
        assert_eq!(store.delete(Some(&|e: &Example| e.text == "hello")).unwrap(), 1);
        assert_eq!(store.count().unwrap(), 2);
        assert_eq!(store.delete(None).unwrap(), 2);
        assert_eq!(store.count().unwrap(), 0);
    }

    #[test]
    fn embeddings_are_sealed_under_their_example_and_go_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), keys(dir.path())).unwrap();
        let ex = |t: &str| Example { text: t.into(), label: "greet".into(), embedding: None };
        store.import(&[ex("hello"), ex("hi there"), ex("good morning")]).unwrap();
        assert_eq!(store.unembedded().unwrap().len(), 3);
        let dim = hearth_models::encoder::EMBEDDING_DIM;
        let one = vec![0.25f32; dim];
        // Key 7 has no example: skipped, not stored.
        store.save_embeddings(&[(1, one.clone()), (7, one.clone())]).unwrap();
        let missing: Vec<u64> = store.unembedded().unwrap().iter().map(|(k, _)| *k).collect();
        assert_eq!(missing, [0, 2]);
        let all = store.examples_embedded().unwrap();
        assert_eq!(all[1].embedding.as_deref(), Some(one.as_slice()));
        assert!(all[0].embedding.is_none() && all[2].embedding.is_none());
        assert_eq!(store.kek_versions().unwrap().values().sum::<u64>(), 4, "three rows and one embedding");
        // Deleting an example deletes its embedding.
        store.delete(Some(&|e: &Example| e.text == "hi there")).unwrap();
        assert_eq!(store.kek_versions().unwrap().values().sum::<u64>(), 2);
        // A sealed embedding of the wrong length is corrupt, named as such.
        let sealed = store.keys.seal(&row_object(EXAMPLE_EMBEDDINGS, 0), &[0u8; 12]).unwrap();
        {
            let tx = store.db.begin_write().unwrap();
            tx.open_table(EXAMPLE_EMBEDDINGS).unwrap().insert(0, sealed.as_slice()).unwrap();
            tx.commit().unwrap();
        }
        let err = store.examples_embedded().unwrap_err().to_string();
        assert!(err.contains("example_embeddings") && err.contains("not one embedding"), "{err}");
    }

    #[test]
    fn each_family_has_its_own_sealed_rows_and_served_model() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys(dir.path());
        let emo = |t: &str, l: &[&str]| EmotionExample {
            text: t.into(),
            labels: l.iter().map(|s| s.to_string()).collect(),
            embedding: None,
        };
        let csv = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n\
                   536365,85123A,WHITE HANGING HEART,6,2010-12-01T08:26,2.55,17850,United Kingdom\n\
                   C536379,85123A,WHITE HANGING HEART,-1,2010-12-01T09:41,2.55,17850,United Kingdom\n";
        let rows = hearth_models::recommend::data::parse_transactions(csv).unwrap().examples;
        {
            let store = Store::open(dir.path(), Arc::clone(&keys)).unwrap();
            assert_eq!(
                store
                    .import_emotion(&[emo("grr, furious", &["anger"]), emo("yay", &["joy", "surprise"])])
                    .unwrap(),
                2
            );
            assert_eq!(store.import_transactions(&rows).unwrap(), 2);
            store.save_model(b"intent").unwrap();
            store.save_model_of("emotion", b"emotion-model").unwrap();
        }
        let raw = std::fs::read(dir.path().join(STORE_FILE)).unwrap();
        for needle in ["grr, furious", "WHITE HANGING HEART", "17850", "emotion-model"] {
            assert!(!raw.windows(needle.len()).any(|w| w == needle.as_bytes()), "{needle} in the clear");
        }
        let store = Store::open(dir.path(), keys).unwrap();
        assert_eq!(store.count().unwrap(), 0, "intent examples are a table of their own");
        assert_eq!(store.emotion_examples().unwrap()[1].labels, ["joy", "surprise"]);
        assert_eq!(store.transactions().unwrap(), rows);
        assert_eq!((store.emotion_count().unwrap(), store.transaction_count().unwrap()), (2, 2));
        assert_eq!(store.load_model_of("intent").unwrap().as_deref(), Some(&b"intent"[..]));
        assert_eq!(store.load_model_of("emotion").unwrap().as_deref(), Some(&b"emotion-model"[..]));
        assert_eq!(store.load_model_of("recommend").unwrap(), None);
        assert_eq!(store.kek_versions().unwrap().get("kek@v1"), Some(&6), "4 rows and 2 models");
    }
}

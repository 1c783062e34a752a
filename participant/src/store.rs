//! The participant's embedded store (redb): its own data, one table per model family (labelled
//! conversations for intent, conversations with emotion labels, purchase transactions for the
//! recommender), and the model it serves for each family.
//!
//! The data never leaves this store except as model updates. Imports append; each row keeps the sequence
//! number it was imported under.

use std::path::Path;

use hearth_models::recommend::data::Transaction;
use hearth_models::{EmotionExample, Example};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

const EXAMPLES: TableDefinition<u64, &[u8]> = TableDefinition::new("examples");
const EMOTION_EXAMPLES: TableDefinition<u64, &[u8]> = TableDefinition::new("emotion_examples");
const TRANSACTIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("transactions");
const MODEL: TableDefinition<&str, &[u8]> = TableDefinition::new("model");

/// The key of a family's served model in the `model` table; intent keeps the key it had before families.
fn model_key(family: &str) -> String {
    if family == "intent" {
        "served".to_string()
    } else {
        format!("served/{family}")
    }
}

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
    /// A stored row of another table could not be decoded.
    #[error("participant store: row {key} of {table} is corrupt: {reason}")]
    CorruptRow {
        /// The table.
        table: String,
        /// The row's key.
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
        tx.open_table(EMOTION_EXAMPLES).map_err(db_err)?;
        tx.open_table(TRANSACTIONS).map_err(db_err)?;
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
        let tx = self.db.begin_write().map_err(db_err)?;
        tx.open_table(MODEL).map_err(db_err)?.insert(model_key(family).as_str(), file).map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    /// The served model file of `family`, if one was stored.
    pub fn load_model_of(&self, family: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(MODEL).map_err(db_err)?;
        Ok(t.get(model_key(family).as_str()).map_err(db_err)?.map(|v| v.value().to_vec()))
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

    /// Appends `rows` as JSON under the next sequence numbers of `table`, in one transaction. The one
    /// place a row of the per-family tables is written.
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
                let json = serde_json::to_vec(row).map_err(db_err)?;
                t.insert(key, json.as_slice()).map_err(db_err)?;
            }
            t.len().map_err(db_err)?
        };
        tx.commit().map_err(db_err)?;
        Ok(total)
    }

    /// Every row of `table`, in key order. The one place a row of the per-family tables is read.
    fn read_all<T: DeserializeOwned>(
        &self,
        table: TableDefinition<u64, &[u8]>,
    ) -> Result<Vec<T>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(table).map_err(db_err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let value = serde_json::from_slice(v.value()).map_err(|e| StoreError::CorruptRow {
                table: redb::TableHandle::name(&table).to_string(),
                key: k.value(),
                reason: e.to_string(),
            })?;
            out.push(value);
        }
        Ok(out)
    }

    fn len(&self, table: TableDefinition<u64, &[u8]>) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(table).map_err(db_err)?;
        t.len().map_err(db_err)
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

    #[test]
    fn each_family_has_its_own_rows_and_served_model() {
        let dir = tempfile::tempdir().unwrap();
        let emo = |t: &str, l: &[&str]| EmotionExample {
            text: t.into(),
            labels: l.iter().map(|s| s.to_string()).collect(),
        };
        let csv = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n\
                   536365,85123A,WHITE HANGING HEART,6,2010-12-01T08:26,2.55,17850,United Kingdom\n\
                   C536379,85123A,WHITE HANGING HEART,-1,2010-12-01T09:41,2.55,17850,United Kingdom\n";
        let rows = hearth_models::recommend::data::parse_transactions(csv).unwrap().examples;
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(
                store.import_emotion(&[emo("grr", &["anger"]), emo("yay", &["joy", "surprise"])]).unwrap(),
                2
            );
            assert_eq!(store.import_transactions(&rows).unwrap(), 2);
            store.save_model(b"intent").unwrap();
            store.save_model_of("emotion", b"emotion").unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.count().unwrap(), 0, "intent examples are a table of their own");
        assert_eq!(store.emotion_examples().unwrap()[1].labels, ["joy", "surprise"]);
        assert_eq!(store.transactions().unwrap(), rows);
        assert_eq!((store.emotion_count().unwrap(), store.transaction_count().unwrap()), (2, 2));
        assert_eq!(store.load_model_of("intent").unwrap().as_deref(), Some(&b"intent"[..]));
        assert_eq!(store.load_model_of("emotion").unwrap().as_deref(), Some(&b"emotion"[..]));
        assert_eq!(store.load_model_of("recommend").unwrap(), None);
    }
}

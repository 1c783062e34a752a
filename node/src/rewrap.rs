//! Moving stored objects to the current key-encryption key version, so that old versions can be retired.
//!
//! A KEK rotation only changes what new objects use; every object sealed before it still names the old
//! version. [`rewrap_table`] opens each such object and seals it again (a fresh data key, wrapped by the
//! current version), in batches of one write transaction each. It is resumable by construction: an
//! interrupted run leaves whole batches done and the rest untouched, and the next run finds only the
//! objects still under an old version. [`count_by_kek`] is what `hearth data stats` shows.
//!
//! A new data key per object (rather than unwrapping the old data key and wrapping it again) keeps the
//! body's nonce from ever being reused under one data key with a different header.

use std::collections::BTreeMap;

use hearth_crypto::envelope::kek_of;
use redb::{Database, Key, ReadableTable, TableDefinition, TableError, TableHandle};

use crate::keys::NodeKeys;
use crate::NodeError;

/// Why a table could not be rewrapped or counted.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum RewrapError {
    /// The database refused a read or a write.
    #[error("table {table}: {reason}")]
    Database {
        /// The table.
        table: String,
        /// The database's error.
        reason: String,
    },
    /// A stored value is not an envelope, or did not open: it is left as it was.
    #[error("table {table}: {source}")]
    Object {
        /// The table.
        table: String,
        /// What failed, naming the object.
        source: NodeError,
    },
}

/// What one table's rewrap did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableRewrap {
    /// The table's name.
    pub table: String,
    /// Objects that were under an older version when the run started.
    pub pending: u64,
    /// Of those, how many are now under the current version.
    pub moved: u64,
}

fn db_err(table: &str) -> impl Fn(&dyn std::fmt::Display) -> RewrapError + '_ {
    move |e| RewrapError::Database { table: table.to_string(), reason: e.to_string() }
}

/// Seals every value of `table` that is under an older KEK version again under the current one, `batch`
/// values per transaction, calling `progress` after each. `object` names a row's object (the associated
/// data it was sealed with). A table that does not exist yet has nothing to move.
pub fn rewrap_table<K: Key + 'static>(
    db: &Database,
    keys: &NodeKeys,
    table: TableDefinition<K, &[u8]>,
    object: &dyn for<'a> Fn(K::SelfType<'a>) -> String,
    batch: usize,
    progress: &mut dyn FnMut(&TableRewrap),
) -> Result<TableRewrap, RewrapError> {
    let name = table.name().to_string();
    let err = db_err(&name);
    let current = keys.current_kek().map_err(|source| RewrapError::Object { table: name.clone(), source })?;
    let mut report = TableRewrap { table: name.clone(), ..Default::default() };
    // Keys only (not values) are collected: a few bytes per row.
    let pending: Vec<Vec<u8>> = {
        let tx = db.begin_read().map_err(|e| err(&e))?;
        let t = match tx.open_table(table) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(report),
            Err(e) => return Err(err(&e)),
        };
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| err(&e))? {
            let (k, v) = row.map_err(|e| err(&e))?;
            let under = kek_of(v.value()).map_err(|source| RewrapError::Object {
                table: name.clone(),
                source: NodeError::Envelope { object: object(k.value()), source },
            })?;
            if under != current {
                out.push(K::as_bytes(&k.value()).as_ref().to_vec());
            }
        }
        out
    };
    report.pending = pending.len() as u64;
    progress(&report);
    for chunk in pending.chunks(batch.max(1)) {
        let tx = db.begin_write().map_err(|e| err(&e))?;
        {
            let mut t = tx.open_table(table).map_err(|e| err(&e))?;
            for raw in chunk {
                let old = match t.get(K::from_bytes(raw)).map_err(|e| err(&e))? {
                    Some(v) => v.value().to_vec(),
                    None => continue, // deleted since it was listed
                };
                let id = object(K::from_bytes(raw));
                let fail = |source| RewrapError::Object { table: name.clone(), source };
                let plaintext = keys.open_sealed_object(&id, &old).map_err(fail)?;
                let sealed = keys.seal(&id, &plaintext).map_err(fail)?;
                t.insert(K::from_bytes(raw), sealed.as_slice()).map_err(|e| err(&e))?;
            }
        }
        tx.commit().map_err(|e| err(&e))?;
        report.moved += chunk.len() as u64;
        progress(&report);
    }
    Ok(report)
}

/// Adds the per-version counts `more` into `into` (stores sum their tables', commands their stores').
pub fn add_counts(into: &mut BTreeMap<String, u64>, more: BTreeMap<String, u64>) {
    for (kek, n) in more {
        *into.entry(kek).or_insert(0) += n;
    }
}

/// How many values of `table` each KEK version sealed (`kek@v1` -> count). A missing table counts none.
pub fn count_by_kek<K: Key + 'static>(
    db: &Database,
    table: TableDefinition<K, &[u8]>,
) -> Result<BTreeMap<String, u64>, RewrapError> {
    let name = table.name().to_string();
    let err = db_err(&name);
    let tx = db.begin_read().map_err(|e| err(&e))?;
    let t = match tx.open_table(table) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
        Err(e) => return Err(err(&e)),
    };
    let mut out = BTreeMap::new();
    for row in t.iter().map_err(|e| err(&e))? {
        let (_, v) = row.map_err(|e| err(&e))?;
        let under = kek_of(v.value()).map_err(|e| err(&e))?;
        *out.entry(under.to_string()).or_insert(0) += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use hearth_crypto::SuiteId;

    use super::*;
    use crate::config::KeystoreConfig;
    use crate::keys::{Create, KEK, PARTICIPANT_KEYS};

    const ROWS: TableDefinition<u64, &[u8]> = TableDefinition::new("rows");

    fn keys(dir: &Path) -> NodeKeys {
        let f = dir.join("pass");
        std::fs::write(&f, "test passphrase").unwrap();
        let cfg = KeystoreConfig {
            passphrase_file: Some(f),
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            ..Default::default()
        };
        NodeKeys::open(&cfg, SuiteId::International, dir, PARTICIPANT_KEYS, Create::IfMissing, None)
            .unwrap()
            .0
    }

    #[test]
    fn a_rewrap_moves_every_old_object_in_batches_and_a_second_run_finds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys(dir.path());
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let object = |k: u64| format!("test/row/{k}");
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(ROWS).unwrap();
            for k in 0..25u64 {
                t.insert(k, keys.seal(&object(k), format!("row {k}").as_bytes()).unwrap().as_slice())
                    .unwrap();
            }
        }
        tx.commit().unwrap();
        keys.rotate(KEK).unwrap();
        assert_eq!(count_by_kek(&db, ROWS).unwrap(), BTreeMap::from([("kek@v1".to_string(), 25)]));

        let mut seen = Vec::new();
        let r = rewrap_table(&db, &keys, ROWS, &object, 10, &mut |p| seen.push(p.moved)).unwrap();
        assert_eq!((r.pending, r.moved), (25, 25));
        assert_eq!(seen, vec![0, 10, 20, 25], "progress after each batch");
        assert_eq!(count_by_kek(&db, ROWS).unwrap(), BTreeMap::from([("kek@v2".to_string(), 25)]));
        // Every row still opens as itself.
        let tx = db.begin_read().unwrap();
        let t = tx.open_table(ROWS).unwrap();
        for k in 0..25u64 {
            let v = t.get(k).unwrap().unwrap();
            assert_eq!(
                keys.open_sealed_object(&object(k), v.value()).unwrap().as_slice(),
                format!("row {k}").as_bytes()
            );
        }
        let again = rewrap_table(&db, &keys, ROWS, &object, 10, &mut |_| {}).unwrap();
        assert_eq!((again.pending, again.moved), (0, 0));
        // A missing table has nothing to move.
        const NONE: TableDefinition<u64, &[u8]> = TableDefinition::new("none");
        assert_eq!(rewrap_table(&db, &keys, NONE, &object, 10, &mut |_| {}).unwrap().pending, 0);
    }

    #[test]
    fn a_value_that_does_not_open_stops_the_run_and_is_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys(dir.path());
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(ROWS).unwrap();
            // Sealed under another object's name: it cannot open as row 0.
            t.insert(0u64, keys.seal("elsewhere", b"x").unwrap().as_slice()).unwrap();
        }
        tx.commit().unwrap();
        keys.rotate(KEK).unwrap();
        let e = rewrap_table(&db, &keys, ROWS, &|k| format!("test/row/{k}"), 10, &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("test/row/0"), "{e}");
        assert_eq!(count_by_kek(&db, ROWS).unwrap(), BTreeMap::from([("kek@v1".to_string(), 1)]));
    }
}

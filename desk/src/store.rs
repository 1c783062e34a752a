//! `service.redb`: the customer-service core's records, envelope-encrypted, written behind the requests
//! by one writer thread that commits in groups.
//!
//! Two tables: `customers` (keyed by the keyed hash of the customer id, so the id itself is not in the
//! file; the value is the sealed record: links, sessions, messages) and `workflow_runs` (keyed by the
//! random run id; the sealed run). Every value is sealed with [`NodeKeys::seal`] under an object name
//! that binds it to its key.
//!
//! Durability: a request's changes are sealed and queued ([`Writer::put`]) and the answer goes out
//! without waiting; the writer drains everything queued, applies it in one redb transaction and
//! commits (one fsync for the whole group). A crash loses at most the group being written, typically a
//! few milliseconds of messages. What must not be lost waits with [`Writer::flush`]: an erasure
//! (answered only once it is on disk) and a workflow run's state before each webhook call. The
//! queue is bounded, so a disk slower than the request rate slows requests instead of growing memory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc;

use hearth_node::keys::NodeKeys;
use hearth_node::rewrap::{add_counts, count_by_kek, rewrap_table, TableRewrap};
use redb::{Database, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;

use crate::error::StoreError;

const CUSTOMERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("customers");
const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("workflow_runs");

/// The store's file name inside the data directory.
pub const SERVICE_FILE: &str = "service.redb";
/// Changes queued before requests wait for the writer.
const QUEUE: usize = 16_384;
/// Most changes applied in one transaction.
const GROUP: usize = 4_096;

/// The object name a customer's record is sealed under.
pub fn customer_object(row: &[u8]) -> String {
    format!("hearth/participant/service/customer/{}", hex::encode(row))
}

/// How many records of `dir/service.redb` each key-encryption key version sealed (none when the file does
/// not exist yet). Run while the participant is stopped.
pub fn kek_versions(dir: &Path) -> Result<BTreeMap<String, u64>, StoreError> {
    let Some(db) = open_existing(dir)? else { return Ok(BTreeMap::new()) };
    let doing = "counting records per key-encryption key version";
    let mut out = count_by_kek(&db, CUSTOMERS).map_err(StoreError::db(doing))?;
    add_counts(&mut out, count_by_kek(&db, RUNS).map_err(StoreError::db(doing))?);
    Ok(out)
}

/// Seals every record of `dir/service.redb` still under an older key-encryption key version again under
/// the current one, `batch` per transaction (see [`hearth_node::rewrap`]). Run while the participant is
/// stopped.
pub fn rewrap(
    dir: &Path,
    keys: &NodeKeys,
    batch: usize,
    progress: &mut dyn FnMut(&TableRewrap),
) -> Result<Vec<TableRewrap>, StoreError> {
    let Some(db) = open_existing(dir)? else { return Ok(Vec::new()) };
    let doing = "moving records to the current key-encryption key version";
    Ok(vec![
        rewrap_table(&db, keys, CUSTOMERS, &|row| customer_object(row), batch, progress)
            .map_err(StoreError::db(doing))?,
        rewrap_table(&db, keys, RUNS, &|id| run_object(id), batch, progress)
            .map_err(StoreError::db(doing))?,
    ])
}

fn open_existing(dir: &Path) -> Result<Option<Database>, StoreError> {
    let path = dir.join(SERVICE_FILE);
    if !path.exists() {
        return Ok(None);
    }
    Database::open(&path).map(Some).map_err(StoreError::db("opening service.redb"))
}

/// The object name a workflow run is sealed under.
pub fn run_object(id: &str) -> String {
    format!("hearth/participant/service/run/{id}")
}

enum Op {
    PutCustomer(Vec<u8>, Vec<u8>),
    DeleteCustomer(Vec<u8>),
    PutRun(String, Vec<u8>),
    DeleteRun(String),
    /// Answered once everything queued before it is committed.
    Flush(tokio::sync::oneshot::Sender<Result<(), StoreError>>),
    /// Compact the file after the group (after an erasure), so freed pages are released.
    Compact,
}

/// The handle requests queue changes on.
#[derive(Debug, Clone)]
pub struct Writer {
    tx: mpsc::SyncSender<Op>,
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Op")
    }
}

/// What the store held at start, opened.
#[derive(Debug, Default)]
pub struct Loaded<C, R> {
    /// Customers with their row keys.
    pub customers: Vec<(Vec<u8>, C)>,
    /// Workflow runs.
    pub runs: Vec<R>,
}

/// Opens `dir/service.redb`, reads and opens every record, and starts the writer thread.
pub fn open<C: DeserializeOwned, R: DeserializeOwned>(
    dir: &Path,
    keys: &NodeKeys,
) -> Result<(Writer, Loaded<C, R>), StoreError> {
    let path = dir.join(SERVICE_FILE);
    let db = Database::create(&path).map_err(StoreError::db("opening service.redb"))?;
    let tx = db.begin_write().map_err(StoreError::db("creating the tables"))?;
    tx.open_table(CUSTOMERS).map_err(StoreError::db("creating the tables"))?;
    tx.open_table(RUNS).map_err(StoreError::db("creating the tables"))?;
    tx.commit().map_err(StoreError::db("creating the tables"))?;
    let mut loaded = Loaded { customers: Vec::new(), runs: Vec::new() };
    {
        let reading = "reading the records";
        let tx = db.begin_read().map_err(StoreError::db(reading))?;
        let table = tx.open_table(CUSTOMERS).map_err(StoreError::db(reading))?;
        for row in table.iter().map_err(StoreError::db(reading))? {
            let (k, v) = row.map_err(StoreError::db(reading))?;
            let bad = |message: String| StoreError::Record {
                what: "customer row",
                id: hex::encode(k.value()),
                message,
            };
            let plain = keys
                .open_sealed_object(&customer_object(k.value()), v.value())
                .map_err(|e| bad(e.to_string()))?;
            let c = serde_json::from_slice(&plain).map_err(|e| bad(e.to_string()))?;
            loaded.customers.push((k.value().to_vec(), c));
        }
        let table = tx.open_table(RUNS).map_err(StoreError::db(reading))?;
        for row in table.iter().map_err(StoreError::db(reading))? {
            let (k, v) = row.map_err(StoreError::db(reading))?;
            let bad = |message: String| StoreError::Record {
                what: "workflow run",
                id: k.value().to_string(),
                message,
            };
            let plain =
                keys.open_sealed_object(&run_object(k.value()), v.value()).map_err(|e| bad(e.to_string()))?;
            loaded.runs.push(serde_json::from_slice(&plain).map_err(|e| bad(e.to_string()))?);
        }
    }
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    std::thread::Builder::new()
        .name("service-store-writer".into())
        .spawn(move || write_loop(db, rx))
        .map_err(StoreError::db("starting the writer thread"))?;
    Ok((Writer { tx }, loaded))
}

/// Applies queued changes in groups until every [`Writer`] is dropped.
fn write_loop(mut db: Database, rx: mpsc::Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < GROUP {
            match rx.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let result = apply(&db, &mut group);
        if let Err(e) = &result {
            tracing::error!(error = %e, "service store: a group of changes was not written");
        }
        let mut compact = false;
        for op in group {
            match op {
                Op::Flush(ack) => {
                    let _ = ack.send(result.clone());
                }
                Op::Compact => compact = true,
                _ => {}
            }
        }
        if compact {
            if let Err(e) = db.compact() {
                tracing::warn!(error = %e, "service store: compaction after an erasure failed");
            }
        }
    }
}

fn apply(db: &Database, group: &mut [Op]) -> Result<(), StoreError> {
    let writing = "writing a group of changes";
    let tx = db.begin_write().map_err(StoreError::db(writing))?;
    {
        let mut customers = tx.open_table(CUSTOMERS).map_err(StoreError::db(writing))?;
        let mut runs = tx.open_table(RUNS).map_err(StoreError::db(writing))?;
        for op in group.iter() {
            let done = match op {
                Op::PutCustomer(k, v) => customers.insert(k.as_slice(), v.as_slice()).map(drop),
                Op::DeleteCustomer(k) => customers.remove(k.as_slice()).map(drop),
                Op::PutRun(k, v) => runs.insert(k.as_str(), v.as_slice()).map(drop),
                Op::DeleteRun(k) => runs.remove(k.as_str()).map(drop),
                Op::Flush(_) | Op::Compact => Ok(()),
            };
            done.map_err(StoreError::db(writing))?;
        }
    }
    tx.commit().map_err(StoreError::db("committing a group of changes"))
}

impl Writer {
    fn send(&self, op: Op) -> Result<(), StoreError> {
        self.tx.send(op).map_err(|_| StoreError::WriterStopped)
    }

    /// Queues a customer's sealed record.
    pub fn put_customer(&self, row: &[u8], sealed: Vec<u8>) -> Result<(), StoreError> {
        self.send(Op::PutCustomer(row.to_vec(), sealed))
    }

    /// Queues a customer's removal.
    pub fn delete_customer(&self, row: &[u8]) -> Result<(), StoreError> {
        self.send(Op::DeleteCustomer(row.to_vec()))
    }

    /// Queues a workflow run's sealed state.
    pub fn put_run(&self, id: &str, sealed: Vec<u8>) -> Result<(), StoreError> {
        self.send(Op::PutRun(id.to_string(), sealed))
    }

    /// Queues a workflow run's removal.
    pub fn delete_run(&self, id: &str) -> Result<(), StoreError> {
        self.send(Op::DeleteRun(id.to_string()))
    }

    /// Asks for a compaction after the current group.
    pub fn compact(&self) -> Result<(), StoreError> {
        self.send(Op::Compact)
    }

    /// Waits until everything queued so far is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (ack, done) = tokio::sync::oneshot::channel();
        let tx = self.tx.clone();
        // `send` blocks while the queue is full: not on a runtime worker.
        tokio::task::spawn_blocking(move || tx.send(Op::Flush(ack)))
            .await
            .map_err(|_| StoreError::WriterStopped)?
            .map_err(|_| StoreError::WriterStopped)?;
        done.await.map_err(|_| StoreError::WriterStopped)?
    }
}

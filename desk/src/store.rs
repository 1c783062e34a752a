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

use std::path::Path;
use std::sync::mpsc;

use hearth_node::keys::NodeKeys;
use redb::{Database, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;

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
    Flush(tokio::sync::oneshot::Sender<Result<(), String>>),
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

fn db_err(e: impl std::fmt::Display) -> String {
    format!("service store: {e}")
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
) -> Result<(Writer, Loaded<C, R>), String> {
    let path = dir.join(SERVICE_FILE);
    let db = Database::create(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let tx = db.begin_write().map_err(db_err)?;
    tx.open_table(CUSTOMERS).map_err(db_err)?;
    tx.open_table(RUNS).map_err(db_err)?;
    tx.commit().map_err(db_err)?;
    let mut loaded = Loaded { customers: Vec::new(), runs: Vec::new() };
    {
        let tx = db.begin_read().map_err(db_err)?;
        for row in tx.open_table(CUSTOMERS).map_err(db_err)?.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let plain = keys
                .open_sealed_object(&customer_object(k.value()), v.value())
                .map_err(|e| format!("service store: customer row {}: {e}", hex::encode(k.value())))?;
            let c =
                serde_json::from_slice(&plain).map_err(|e| format!("service store: customer row: {e}"))?;
            loaded.customers.push((k.value().to_vec(), c));
        }
        for row in tx.open_table(RUNS).map_err(db_err)?.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let plain = keys
                .open_sealed_object(&run_object(k.value()), v.value())
                .map_err(|e| format!("service store: workflow run {}: {e}", k.value()))?;
            loaded.runs.push(serde_json::from_slice(&plain).map_err(|e| format!("workflow run: {e}"))?);
        }
    }
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    std::thread::Builder::new()
        .name("service-store-writer".into())
        .spawn(move || write_loop(db, rx))
        .map_err(|e| format!("starting the service store writer: {e}"))?;
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

fn apply(db: &Database, group: &mut [Op]) -> Result<(), String> {
    let tx = db.begin_write().map_err(db_err)?;
    {
        let mut customers = tx.open_table(CUSTOMERS).map_err(db_err)?;
        let mut runs = tx.open_table(RUNS).map_err(db_err)?;
        for op in group.iter() {
            match op {
                Op::PutCustomer(k, v) => drop(customers.insert(k.as_slice(), v.as_slice()).map_err(db_err)?),
                Op::DeleteCustomer(k) => drop(customers.remove(k.as_slice()).map_err(db_err)?),
                Op::PutRun(k, v) => drop(runs.insert(k.as_str(), v.as_slice()).map_err(db_err)?),
                Op::DeleteRun(k) => drop(runs.remove(k.as_str()).map_err(db_err)?),
                Op::Flush(_) | Op::Compact => {}
            }
        }
    }
    tx.commit().map_err(db_err)
}

impl Writer {
    fn send(&self, op: Op) -> Result<(), String> {
        self.tx.send(op).map_err(|_| "service store: the writer thread stopped".to_string())
    }

    /// Queues a customer's sealed record.
    pub fn put_customer(&self, row: &[u8], sealed: Vec<u8>) -> Result<(), String> {
        self.send(Op::PutCustomer(row.to_vec(), sealed))
    }

    /// Queues a customer's removal.
    pub fn delete_customer(&self, row: &[u8]) -> Result<(), String> {
        self.send(Op::DeleteCustomer(row.to_vec()))
    }

    /// Queues a workflow run's sealed state.
    pub fn put_run(&self, id: &str, sealed: Vec<u8>) -> Result<(), String> {
        self.send(Op::PutRun(id.to_string(), sealed))
    }

    /// Queues a workflow run's removal.
    pub fn delete_run(&self, id: &str) -> Result<(), String> {
        self.send(Op::DeleteRun(id.to_string()))
    }

    /// Asks for a compaction after the current group.
    pub fn compact(&self) -> Result<(), String> {
        self.send(Op::Compact)
    }

    /// Waits until everything queued so far is committed.
    pub async fn flush(&self) -> Result<(), String> {
        let (ack, done) = tokio::sync::oneshot::channel();
        let tx = self.tx.clone();
        // `send` blocks while the queue is full: not on a runtime worker.
        tokio::task::spawn_blocking(move || tx.send(Op::Flush(ack)))
            .await
            .map_err(|e| format!("service store: {e}"))?
            .map_err(|_| "service store: the writer thread stopped".to_string())?;
        done.await.map_err(|_| "service store: the writer thread stopped".to_string())?
    }
}

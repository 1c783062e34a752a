//! The node's audit trail: security-relevant events appended as JSON lines to `audit.jsonl` in the state
//! directory. A tamper-evident, signed log replaces this file format later; callers only see
//! [`AuditLog::record`], so they will not change.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// An append-only audit file shared by a node's tasks.
#[derive(Debug)]
pub struct AuditLog {
    // A std mutex: the critical section is one small write and never awaits.
    file: Mutex<File>,
}

/// One audit entry.
#[derive(Debug, Serialize)]
struct Entry<'a> {
    unix_ms: u64,
    actor: &'a str,
    action: &'a str,
    outcome: &'a str,
    detail: &'a str,
}

impl AuditLog {
    /// Opens (or creates) `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self { file: Mutex::new(file) })
    }

    /// Appends one entry. `actor` is the certificate identity or `"system"`; `detail` must not contain
    /// customer data or secrets. A failed write is logged, never fatal: the work it describes already
    /// happened or was already refused.
    pub fn record(&self, actor: &str, action: &str, outcome: &str, detail: &str) {
        let unix_ms = now_ms();
        let entry = Entry { unix_ms, actor, action, outcome, detail };
        let mut line = match serde_json::to_vec(&entry) {
            Ok(line) => line,
            Err(e) => {
                tracing::error!(error = %e, "audit entry could not be encoded");
                return;
            }
        };
        line.push(b'\n');
        let Ok(mut file) = self.file.lock() else {
            tracing::error!("audit log lock poisoned; entry lost: {action} {outcome}");
            return;
        };
        if let Err(e) = file.write_all(&line).and_then(|()| file.flush()) {
            tracing::error!(error = %e, "audit entry could not be written");
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

//! The node's audit log on disk: every security-relevant action, appended durably, with its tree head
//! signed by the node's audit key at least every second while entries arrive and when the node stops.
//!
//! The Merkle tree, entries, checkpoints and the export format are `hearth_audit`'s; this module
//! owns the files (see [`files`]) and the timing:
//!
//! - [`AuditLog::record`] (and [`AuditLog::record_event`]) appends one entry: the line is written to
//!   `entries.jsonl` with one `write` call before it returns, so a crash of the process loses nothing.
//!   It takes a mutex for a few microseconds (one hash, one write) and never awaits.
//! - A background thread fsyncs new entries every 100 ms (a power loss loses at most that window), and
//!   once a second, if the log grew, signs a checkpoint over the entries already on disk, appends it to
//!   `checkpoints.jsonl` and saves the tree state. Signing never happens on an async worker.
//! - [`AuditLog::checkpoint_now`] does the same at once; services call it on shutdown, and CLI commands
//!   after recording a key rotation or a deletion.
//! - [`AuditLog::open`] resumes: it loads the tree state saved at the last checkpoint, replays the
//!   entries written after it (checking each recorded leaf hash and sequence number), checks the root
//!   against the last signed checkpoint, and refuses to open a log truncated below a signed checkpoint
//!   or whose replayed entries were altered. Entries before the saved state are not re-read at every
//!   start (that would cost O(log size)); without `tree.json` the whole log is replayed and checked,
//!   and `hearth audit verify` on an export checks everything.
//!
//! What gets recorded, and with which actor, tenant and object ids, is the services' business; the
//! action names they use are listed in `ARCHITECTURE.md` ("Audit").

pub mod export;
pub mod files;
mod replay;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hearth_audit::entry::{
    MAX_ACTION_LEN, MAX_ACTOR_LEN, MAX_DETAIL_LEN, MAX_OBJECTS, MAX_OBJECT_ID_LEN, MAX_TENANT_LEN,
};
use hearth_audit::export::{checkpoint_line, entry_line_from_canonical};
use hearth_audit::{
    Action, AuditLog as LogState, Checkpoint, Event, Outcome, SignatureType, SignedCheckpoint, VerifierKey,
};
use hearth_crypto::keystore::{KeyAction, KeyEvent};
use hearth_crypto::SuiteId;

use self::files::{read_keys, read_meta, AuditPaths, Meta, TreeState};
use self::replay::replay;
use crate::files::{sync_dir, write_atomic};
use crate::keys::{KeystoreSigner, NodeKeys, AUDIT_KEY};
use crate::NodeError;

/// How often new entries are fsynced.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// How often, at most, a checkpoint is signed while entries arrive.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

// A panic while a lock is held cannot leave the state half-changed in a way these paths rely on (an
// append restores the tree before releasing on failure), so a poisoned lock is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The writer's state: the tree and the open entries file.
struct Writer {
    log: LogState,
    file: File,
    /// Bytes in `entries.jsonl`.
    offset: u64,
}

/// The checkpointing state.
struct Syncer {
    signer: KeystoreSigner,
    checkpoints: File,
    /// Another handle on `entries.jsonl`, for fsync without the writer's lock.
    entries: File,
    synced_size: u64,
    last_checkpoint_size: u64,
    last_checkpoint_at: Option<Instant>,
    last_error_logged: Option<Instant>,
}

struct Inner {
    paths: AuditPaths,
    origin: String,
    suite: SuiteId,
    writer: Mutex<Writer>,
    syncer: Mutex<Syncer>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    /// Entries appended since this process opened the log, by (action, outcome): the operations
    /// endpoint's count of refusals, denials and errors by what was refused.
    counts: Mutex<std::collections::BTreeMap<(String, &'static str), u64>>,
}

/// A node's audit log. Cheap to clone; every clone appends to the same files.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("origin", &self.inner.origin)
            .field("dir", &self.inner.paths.dir)
            .field("size", &self.size())
            .finish()
    }
}

/// What [`AuditLog::open`] found and repaired, for the caller to record.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Bytes of a partly written last entry that were cut off (a crash mid-write).
    pub discarded_bytes: u64,
    /// Entries replayed after the saved tree state.
    pub replayed: u64,
}

impl AuditLog {
    /// Opens (or creates) the audit log of the node whose directory is `node_dir`, signing with the
    /// keystore's audit key. A new log is named `default_origin`; an existing one keeps its origin.
    /// Refuses a log whose files were altered or truncated (see the module docs).
    pub fn open(
        node_dir: &Path,
        keys: &NodeKeys,
        default_origin: &str,
    ) -> Result<(Self, Recovery), NodeError> {
        let paths = AuditPaths::new(node_dir);
        std::fs::create_dir_all(&paths.dir).map_err(NodeError::io(&paths.dir))?;
        let suite = keys.suite();
        let meta = if paths.meta.exists() {
            let m = read_meta(&paths)?;
            if m.suite != suite {
                return Err(NodeError::Audit {
                    path: paths.meta.clone(),
                    reason: format!("the log uses the {} suite, the keystore {}", m.suite, suite),
                });
            }
            m
        } else {
            Checkpoint::new(default_origin, 0, [0; 32])?;
            let m = Meta::new(default_origin, suite);
            let json = serde_json::to_vec(&m).map_err(|e| NodeError::Config(e.to_string()))?;
            write_atomic(&paths.meta, &json, false)?;
            m
        };
        let signer = keys.signer(AUDIT_KEY, &meta.origin)?;
        let mut log_keys = read_keys(&paths)?;
        let current = signer.verifier_key(SignatureType::Log(suite))?;
        if !log_keys.contains(&current) {
            append_line(&paths.keys, format!("{}\n", current.encode()).as_bytes())?;
            log_keys.push(current);
        }
        let (tree, last_time_ms, offset, recovery, last) = replay(&paths, suite, &meta.origin, &log_keys)?;
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&paths.entries)
            .map_err(NodeError::io(&paths.entries))?;
        let entries = file.try_clone().map_err(NodeError::io(&paths.entries))?;
        let checkpoints = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&paths.checkpoints)
            .map_err(NodeError::io(&paths.checkpoints))?;
        sync_dir(&paths.dir);
        let size = tree.size();
        let log = LogState::resume(meta.origin.clone(), tree, last_time_ms)?;
        let inner = Arc::new(Inner {
            counts: Mutex::new(std::collections::BTreeMap::new()),
            origin: meta.origin,
            suite,
            writer: Mutex::new(Writer { log, file, offset }),
            syncer: Mutex::new(Syncer {
                signer,
                checkpoints,
                entries,
                synced_size: size,
                last_checkpoint_size: last,
                last_checkpoint_at: None,
                last_error_logged: None,
            }),
            stop: Arc::new((Mutex::new(false), Condvar::new())),
            paths,
        });
        spawn_syncer(Arc::downgrade(&inner), Arc::clone(&inner.stop));
        Ok((Self { inner }, recovery))
    }

    /// Appends one entry: `actor` is a certificate identity (`participant:bank-a`) or `system`; `detail`
    /// is a short fact without customer text or secrets. For a participant actor the tenant is its id.
    /// Never fails: a problem is logged (see [`AuditLog::record_event`]).
    pub fn record(&self, actor: &str, action: Action, outcome: Outcome, detail: &str) {
        let mut event = Event::new(actor, action, outcome).detail(detail);
        if let Some(id) = actor.strip_prefix("participant:") {
            event = event.tenant(id);
        }
        self.record_event(event);
    }

    /// Appends `event` (fields too long are cut, control characters replaced, so that no caller input can
    /// make the append fail) and returns its sequence number, or `None` if it could not be written (the
    /// reason is logged as an error). Use [`Event`]'s setters for the tenant and object ids: queries and
    /// budget changes record `Event::new(actor, "query.run", ..).tenant(t).object(query_id)`.
    pub fn record_event(&self, event: Event) -> Option<u64> {
        let event = sanitize(event);
        let mut w = lock(&self.inner.writer);
        let before = w.log.clone();
        let a = match w.log.append(event, now_ms()) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "audit entry refused by the log; not recorded");
                return None;
            }
        };
        let line = entry_line_from_canonical(&a.canonical, &a.leaf_hash);
        if let Err(e) = w.file.write_all(&line) {
            // Undo: cut whatever part of the line reached the file, and forget the leaf.
            let offset = w.offset;
            let _ = w.file.set_len(offset);
            w.log = before;
            tracing::error!(file = %self.inner.paths.entries.display(), error = %e, action = a.entry.action(), "audit entry could not be written");
            return None;
        }
        w.offset += line.len() as u64;
        drop(w);
        *lock(&self.inner.counts)
            .entry((a.entry.action().to_string(), a.entry.outcome().as_str()))
            .or_insert(0) += 1;
        Some(a.entry.seq())
    }

    /// Entries appended since this process opened the log, by action and outcome.
    pub fn counts(&self) -> Vec<(String, &'static str, u64)> {
        lock(&self.inner.counts).iter().map(|((a, o), n)| (a.clone(), *o, *n)).collect()
    }

    /// Records a key generation or rotation: action `key.generated` / `key.rotated`, the key id as the
    /// object, its kind, suite and location (and, for signing keys, the new verifier key) in the detail.
    pub fn record_key_event(&self, actor: &str, e: &KeyEvent) -> Option<u64> {
        let mut detail = e.to_string();
        if e.kind.is_signing() {
            if let Some(pk) = &e.public_key {
                if let Ok(v) =
                    VerifierKey::new(self.inner.origin.clone(), SignatureType::Log(e.suite), pk.clone())
                {
                    detail.push_str(&format!("; log vkey {}", v.encode()));
                }
            }
        }
        self.record_event(
            Event::new(actor, key_action(e.action), Outcome::Ok).detail(detail).object(e.key.to_string()),
        )
    }

    /// Records a federated-analytics query for `tenant` (action `query.run`): the query's id as the
    /// object, what it released and what it cost in the detail (never the data it ran on). The API the
    /// query service uses.
    pub fn record_query(
        &self,
        actor: &str,
        tenant: &str,
        query_id: &str,
        outcome: Outcome,
        detail: &str,
    ) -> Option<u64> {
        self.record_event(
            Event::new(actor, Action::QueryRun, outcome).tenant(tenant).object(query_id).detail(detail),
        )
    }

    /// Records a privacy-budget change for `tenant`: action `budget.<change>` (`reserve`, `charge`,
    /// `release`, `policy`), the budget's id (tenant and purpose) as the object, the amounts in the
    /// detail. The API the budget ledger's owner uses.
    pub fn record_budget(
        &self,
        actor: &str,
        tenant: &str,
        action: Action,
        budget_id: &str,
        outcome: Outcome,
        detail: &str,
    ) -> Option<u64> {
        self.record_event(Event::new(actor, action, outcome).tenant(tenant).object(budget_id).detail(detail))
    }

    /// Makes everything recorded so far durable and signs a checkpoint over it now (if the log grew since
    /// the last one). Blocking (fsync, signing): call from `spawn_blocking` in async code.
    pub fn checkpoint_now(&self) -> Result<Option<SignedCheckpoint>, NodeError> {
        self.inner.sync(true)
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// The suite whose hash builds the tree.
    pub fn suite(&self) -> SuiteId {
        self.inner.suite
    }

    /// Entries appended so far.
    pub fn size(&self) -> u64 {
        lock(&self.inner.writer).log.size()
    }

    /// The verifier key of the current audit key, as an auditor should configure it.
    pub fn verifier_key(&self) -> Result<VerifierKey, NodeError> {
        Ok(lock(&self.inner.syncer).signer.verifier_key(SignatureType::Log(self.inner.suite))?)
    }

    /// The audit files.
    pub fn paths(&self) -> &AuditPaths {
        &self.inner.paths
    }
}

/// The origin a new log takes: `configured` if set, else `hearth/<role>/<id>` from the node's
/// certificate at `cert`, else `hearth/<role>/<name of the node directory>` (a CLI command may create a
/// participant's log before its certificate is in place). An existing log keeps the origin it has.
pub fn default_origin(configured: Option<&str>, cert: &Path, role: &str, node_dir: &Path) -> String {
    if let Some(o) = configured {
        return o.to_string();
    }
    let from_cert = std::fs::read_to_string(cert)
        .ok()
        .and_then(|pem| hearth_crypto::pki::cert_der_from_pem(&pem).ok())
        .and_then(|der| hearth_crypto::pki::identity_from_cert_der(&der).ok());
    if let Some(id) = from_cert {
        return format!("hearth/{}/{}", id.role, id.id);
    }
    let name: String = node_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' })
        .take(64)
        .collect();
    format!("hearth/{role}/{}", if name.is_empty() { "node" } else { &name })
}

/// The audit action of a keystore event.
fn key_action(a: KeyAction) -> Action {
    match a {
        KeyAction::Generated => Action::KeyGenerated,
        KeyAction::Rotated => Action::KeyRotated,
        KeyAction::Retired => Action::KeyRetired,
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary and replaces control characters.
fn clean(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        let c = if c.is_control() { '\u{FFFD}' } else { c };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

fn sanitize(e: Event) -> Event {
    let actor = clean(&e.actor, MAX_ACTOR_LEN);
    Event {
        actor: if actor.is_empty() { "unknown".into() } else { actor },
        tenant: e.tenant.map(|t| clean(&t, MAX_TENANT_LEN)).filter(|t| !t.is_empty()),
        action: clean(&e.action, MAX_ACTION_LEN),
        outcome: e.outcome,
        detail: clean(&e.detail, MAX_DETAIL_LEN),
        objects: e
            .objects
            .iter()
            .map(|o| clean(o, MAX_OBJECT_ID_LEN))
            .filter(|o| !o.is_empty())
            .take(MAX_OBJECTS)
            .collect(),
    }
}

fn append_line(path: &Path, line: &[u8]) -> Result<(), NodeError> {
    let mut f = OpenOptions::new().append(true).create(true).open(path).map_err(NodeError::io(path))?;
    f.write_all(line).and_then(|()| f.sync_all()).map_err(NodeError::io(path))
}

impl Inner {
    /// Fsyncs new entries; signs a checkpoint when due (or `force`d) and the log grew.
    fn sync(&self, force: bool) -> Result<Option<SignedCheckpoint>, NodeError> {
        let mut s = lock(&self.syncer);
        let (cp, tree, last_time, offset) = {
            let w = lock(&self.writer);
            (w.log.checkpoint(), w.log.tree().clone(), w.log.last_time_ms(), w.offset)
        };
        if cp.size() > s.synced_size {
            s.entries.sync_data().map_err(NodeError::io(&self.paths.entries))?;
            s.synced_size = cp.size();
        }
        let due = s.last_checkpoint_at.is_none_or(|t| t.elapsed() >= CHECKPOINT_INTERVAL);
        if cp.size() <= s.last_checkpoint_size || !(force || due) {
            return Ok(None);
        }
        let signed = SignedCheckpoint::sign(cp, &s.signer)?;
        let line = checkpoint_line(&signed);
        s.checkpoints
            .write_all(&line)
            .and_then(|()| s.checkpoints.sync_data())
            .map_err(NodeError::io(&self.paths.checkpoints))?;
        let state = TreeState::of(&tree, last_time, offset);
        let json = serde_json::to_vec(&state).map_err(|e| NodeError::Config(e.to_string()))?;
        write_atomic(&self.paths.tree, &json, false)?;
        s.last_checkpoint_size = signed.checkpoint().size();
        s.last_checkpoint_at = Some(Instant::now());
        Ok(Some(signed))
    }

    fn sync_logging(&self, force: bool) {
        if let Err(e) = self.sync(force) {
            let mut s = lock(&self.syncer);
            if s.last_error_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                tracing::error!(log = %self.origin, error = %e, "audit log could not be synced or checkpointed; retrying");
                s.last_error_logged = Some(Instant::now());
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let (m, cv) = &*self.stop;
        *lock(m) = true;
        cv.notify_all();
        // The last handle is gone: make everything durable and sign the final head.
        self.sync_logging(true);
    }
}

/// The background thread: wakes every [`SYNC_INTERVAL`], syncs, and checkpoints when due. It holds only
/// a weak reference, so the log closes (with a final checkpoint) when the last handle is dropped.
fn spawn_syncer(inner: Weak<Inner>, stop: Arc<(Mutex<bool>, Condvar)>) {
    let spawned = std::thread::Builder::new().name("audit-sync".into()).spawn(move || loop {
        {
            let (m, cv) = &*stop;
            let guard = lock(m);
            let (guard, _) = cv.wait_timeout(guard, SYNC_INTERVAL).unwrap_or_else(PoisonError::into_inner);
            if *guard {
                return;
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        inner.sync_logging(false);
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the audit sync thread; checkpoints only on shutdown");
    }
}

#[cfg(test)]
mod tests;

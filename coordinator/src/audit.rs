//! The coordinator's audit trail: the node's signed, append-only audit log (`hearth_node::audit`) in
//! `state_dir/audit/`. Callers record with [`AuditLog::record`] (`actor, action, outcome, detail`) or,
//! with a tenant and object ids, [`AuditLog::record_event`].
//!
//! Actions the coordinator records: `node.start`, `node.stop`, `key.generated`, `key.rotated`,
//! `participant.register`, `connection.refused`, `update.upload` (refused), `job.submit`, `job.resume`,
//! `round.commit`, `round.fail`, `job.end`, and any action refused for a certificate's role (`denied`).

pub use hearth_node::audit::{now_ms, AuditLog};

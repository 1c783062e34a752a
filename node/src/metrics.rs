//! The metrics every node reports about its own keys and certificate (for `GET /metrics`): when its
//! certificate expires and whether the revocation list it holds revokes it, that list's number and due
//! date, and how many data keys each key-encryption key version has wrapped against its limit.

use std::time::{SystemTime, UNIX_EPOCH};

use hearth_transport::ops::MetricsText;

use crate::audit::AuditLog;
use crate::keys::NodeKeys;
use crate::revocation::RevocationState;

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Writes the node's key and certificate metrics: `ca_der` and `cert_der` are its CA and own certificate.
pub fn node_metrics(
    m: &mut MetricsText,
    keys: &NodeKeys,
    revocations: &RevocationState,
    ca_der: &[u8],
    cert_der: &[u8],
) {
    if let Ok(info) = hearth_crypto::pki::inspect_issued_cert(ca_der, cert_der) {
        let identity = info.identity.to_string();
        let serial = info.serial_hex();
        let labels = [("identity", identity.as_str()), ("serial", serial.as_str())];
        m.gauge(
            "hearth_certificate_expiry_timestamp_seconds",
            "When this node's certificate expires (Unix time).",
            &labels,
            unix(info.not_after),
        );
        m.gauge(
            "hearth_certificate_revoked",
            "1 when the revocation list this node holds revokes its own certificate.",
            &labels,
            f64::from(u8::from(revocations.is_revoked(cert_der))),
        );
    }
    match revocations.summary() {
        Some((number, revoked, next)) => {
            m.gauge(
                "hearth_revocation_list_number",
                "CRL number of the revocation list held.",
                &[],
                number as f64,
            );
            m.gauge(
                "hearth_revocation_list_next_update_timestamp_seconds",
                "When the CA means to publish the next revocation list (Unix time).",
                &[],
                unix(next),
            );
            m.gauge(
                "hearth_revoked_certificates",
                "Certificates the list held revokes.",
                &[],
                revoked as f64,
            );
        }
        None => m.gauge("hearth_revocation_list_number", "CRL number of the revocation list held.", &[], 0.0),
    }
    let (usage, limit) = keys.kek_usage();
    for (version, wraps) in usage {
        let v = version.to_string();
        m.gauge(
            "hearth_kek_wraps",
            "Data keys a key-encryption key version wrapped (counted ahead by up to 4096).",
            &[("version", v.as_str())],
            wraps as f64,
        );
    }
    m.gauge(
        "hearth_kek_wrap_limit",
        "Wraps per key-encryption key version before a rotation is forced.",
        &[],
        limit as f64,
    );
}

/// Writes the audit log's metrics: entries appended, and how long ago the newest checkpoint was signed
/// (from its file's modification time).
pub fn audit_metrics(m: &mut MetricsText, log: &AuditLog) {
    m.gauge("hearth_audit_entries", "Entries in this node's audit log.", &[], log.size() as f64);
    for (action, outcome, n) in log.counts() {
        m.counter(
            "hearth_audit_events_total",
            "Audit entries recorded since the process started, by action and outcome (refusals, denials and errors among them).",
            &[("action", action.as_str()), ("outcome", outcome)],
            n as f64,
        );
    }
    let signed = std::fs::metadata(&log.paths().checkpoints).and_then(|md| md.modified());
    if let Ok(at) = signed {
        let age = SystemTime::now().duration_since(at).map_or(0.0, |d| d.as_secs_f64());
        m.gauge(
            "hearth_audit_checkpoint_age_seconds",
            "Seconds since the newest audit checkpoint was signed.",
            &[],
            age,
        );
    }
}

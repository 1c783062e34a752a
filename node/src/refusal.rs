//! Auditing refused connections (the transport's `RefusalHook`): failed TLS handshakes, unknown
//! certificates, certificates without a Hearth identity, the connection limit.
//!
//! A scanner can cause refusals as fast as it can open connections, so they are rate-limited: at most
//! [`MAX_PER_WINDOW`] entries per [`WINDOW`]; the rest are counted and the count is recorded with the
//! next entry that gets through ("N more refusals suppressed"). Nothing a refused peer sends is
//! trusted: the reason is cut and cleaned like any other detail.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hearth_audit::{Action, Event, Outcome};
use hearth_transport::RefusalHook;

use crate::audit::AuditLog;

/// Length of a rate-limiting window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Entries recorded per window; further refusals are counted.
pub const MAX_PER_WINDOW: u32 = 100;

struct Budget {
    window_start: Instant,
    used: u32,
    suppressed: u64,
}

/// A refusal hook that records `connection.refused` entries (outcome `denied`, actor `anonymous`, the
/// peer's address as the object) in `audit`.
pub fn refusal_hook(audit: AuditLog) -> RefusalHook {
    let budget = Arc::new(Mutex::new(Budget { window_start: Instant::now(), used: 0, suppressed: 0 }));
    Arc::new(move |peer: SocketAddr, reason: &str| {
        let suppressed = {
            let mut b = budget.lock().unwrap_or_else(PoisonError::into_inner);
            if b.window_start.elapsed() >= WINDOW {
                b.window_start = Instant::now();
                b.used = 0;
            }
            if b.used >= MAX_PER_WINDOW {
                b.suppressed += 1;
                return;
            }
            b.used += 1;
            std::mem::take(&mut b.suppressed)
        };
        let mut detail = reason.to_string();
        if suppressed > 0 {
            detail.push_str(&format!(" ({suppressed} more refusals suppressed before this one)"));
        }
        audit.record_event(
            Event::new("anonymous", Action::ConnectionRefused, Outcome::Denied)
                .detail(detail)
                .object(peer.to_string()),
        );
    })
}

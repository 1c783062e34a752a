//! What a participant reports on its operations endpoints: ready while its announcement stream from the
//! coordinator is open; metrics on that connection, how many rows of each family its store holds (counts
//! only), its own keys and certificate (`hearth_node::metrics`), and the desk's queues and agents
//! (conversations waiting per queue and priority, the oldest wait, time to a first reply).

use std::sync::Arc;

use hearth_node::keys::NodeKeys;
use hearth_node::revocation::RevocationState;
use hearth_transport::ops::{MetricsText, OpsState};

use crate::federation::Federation;
use crate::store::Store;

pub(crate) struct ParticipantOps {
    pub(crate) federation: Arc<Federation>,
    pub(crate) store: Arc<Store>,
    pub(crate) keys: Arc<NodeKeys>,
    pub(crate) revocations: Arc<RevocationState>,
    pub(crate) ca_der: Vec<u8>,
    pub(crate) cert_der: Vec<u8>,
    pub(crate) audit: hearth_node::audit::AuditLog,
    pub(crate) requests: Arc<hearth_transport::ops::RequestMetrics>,
    /// The desk: its queues and agents.
    pub(crate) desk: Arc<hearth_desk::Desk>,
}

impl OpsState for ParticipantOps {
    fn readiness(&self) -> Result<(), hearth_transport::ops::NotReady> {
        if self.federation.connected() {
            Ok(())
        } else {
            Err(hearth_transport::ops::NotReady(
                "no announcement stream from the coordinator (it is down or unreachable)".into(),
            ))
        }
    }

    fn metrics(&self) -> String {
        let mut m = MetricsText::new();
        m.gauge(
            "hearth_coordinator_connected",
            "1 while the announcement stream from the coordinator is open.",
            &[],
            f64::from(u8::from(self.federation.connected())),
        );
        let counts = [
            ("intent", self.store.count()),
            ("emotion", self.store.emotion_count()),
            ("recommend", self.store.transaction_count()),
        ];
        for (family, n) in counts {
            if let Ok(n) = n {
                m.gauge(
                    "hearth_store_rows",
                    "Rows of the institution's own data, per model family.",
                    &[("family", family)],
                    n as f64,
                );
            }
        }
        hearth_node::metrics::node_metrics(
            &mut m,
            &self.keys,
            &self.revocations,
            &self.ca_der,
            &self.cert_der,
        );
        hearth_node::metrics::audit_metrics(&mut m, &self.audit);
        self.desk.render_agent_metrics(&mut m);
        self.requests.render(&mut m);
        m.finish()
    }
}

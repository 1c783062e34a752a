//! What the coordinator reports on its operations endpoints: always ready once serving (its store is
//! open and its keys unsealed before it listens); metrics on participants, jobs and rounds, the privacy
//! budgets per institution and family, and its own keys and certificate (`hearth_node::metrics`).

use std::collections::BTreeMap;
use std::sync::Arc;

use hearth_node::keys::NodeKeys;
use hearth_transport::ops::{MetricsText, OpsState};

use crate::driver::Shared;
use crate::job::lock;

pub(crate) struct CoordinatorOps {
    pub(crate) shared: Arc<Shared>,
    pub(crate) keys: Arc<NodeKeys>,
    pub(crate) cert_der: Vec<u8>,
}

impl OpsState for CoordinatorOps {
    fn readiness(&self) -> Result<(), String> {
        Ok(())
    }

    fn metrics(&self) -> String {
        let mut m = MetricsText::new();
        let s = &self.shared;
        m.gauge(
            "hearth_participants_connected",
            "Participants with a live announcement stream.",
            &[],
            s.connected().len() as f64,
        );
        m.gauge(
            "hearth_participants_registered",
            "Participants that registered since the start.",
            &[],
            lock(&s.peers).len() as f64,
        );
        let statuses: Vec<_> = lock(&s.jobs).values().map(|j| j.status().1).collect();
        let mut by_state: BTreeMap<String, u64> = BTreeMap::new();
        let mut committed = 0u64;
        for j in &statuses {
            *by_state.entry(j.state.clone()).or_insert(0) += 1;
            committed += j.committed_rounds;
        }
        for (state, n) in by_state {
            m.gauge("hearth_jobs", "Jobs by state.", &[("state", state.as_str())], n as f64);
        }
        m.counter(
            "hearth_rounds_committed_total",
            "Rounds committed, over every job.",
            &[],
            committed as f64,
        );
        // The privacy budgets, as `hearth budget show` reports them (epsilon per institution and family).
        if let Some(report) = s.privacy.report() {
            for f in &report.families {
                let labels = [("institution", f.tenant.0.as_str()), ("family", f.family.0.as_str())];
                m.gauge(
                    "hearth_privacy_budget_epsilon",
                    "Epsilon budget per period.",
                    &labels,
                    f.budget.epsilon,
                );
                m.gauge(
                    "hearth_privacy_spent_epsilon",
                    "Epsilon spent this period.",
                    &labels,
                    f.spent.epsilon,
                );
                m.gauge(
                    "hearth_privacy_reserved_epsilon",
                    "Epsilon held by open reservations.",
                    &labels,
                    f.reserved.epsilon,
                );
                m.gauge(
                    "hearth_privacy_remaining_epsilon",
                    "Epsilon left this period (budget minus spent minus reserved).",
                    &labels,
                    f.remaining.epsilon,
                );
            }
        }
        hearth_node::metrics::node_metrics(&mut m, &self.keys, &s.revocations, &s.ca_der, &self.cert_der);
        m.finish()
    }
}

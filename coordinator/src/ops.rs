//! What the coordinator reports on its operations endpoints: always ready once serving (its store is
//! open and its keys unsealed before it listens); metrics on participants, jobs and rounds, the privacy
//! budgets per institution and family, and its own keys and certificate (`hearth_node::metrics`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hearth_node::keys::NodeKeys;
use hearth_transport::ops::{MetricsText, OpsState};

use crate::driver::Shared;
use crate::job::lock;

/// Counted as they happen, since the coordinator started.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    /// Invited participants missing from a job's closed round (plain or secure).
    pub(crate) dropouts: AtomicU64,
    /// Bytes of secure-aggregation messages received from participants.
    pub(crate) secagg_received: AtomicU64,
    /// Bytes of secure-aggregation messages relayed to participants.
    pub(crate) secagg_relayed: AtomicU64,
}

/// Bucket bounds (seconds) of the round and phase duration histograms.
const DURATION_BOUNDS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

pub(crate) struct CoordinatorOps {
    pub(crate) shared: Arc<Shared>,
    pub(crate) keys: Arc<NodeKeys>,
    pub(crate) cert_der: Vec<u8>,
    pub(crate) requests: Arc<hearth_transport::ops::RequestMetrics>,
}

impl OpsState for CoordinatorOps {
    fn readiness(&self) -> Result<(), hearth_transport::ops::NotReady> {
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
        // Durations and failures from the job records (the same figures `hearth job logs` prints).
        let (mut rounds, mut phases, mut failed) = (Vec::new(), vec![Vec::new(); 6], 0usize);
        for job in lock(&s.jobs).values() {
            let record = lock(&job.record);
            failed += record.failures.len();
            for r in &record.committed {
                rounds.push(r.seconds);
                let mut opened = 0.0;
                for (i, closed) in r.phase_seconds.iter().enumerate() {
                    if let Some(p) = phases.get_mut(i) {
                        p.push((closed - opened).max(0.0));
                    }
                    opened = *closed;
                }
            }
        }
        m.counter(
            "hearth_round_dropouts_total",
            "Invited participants missing from a job's closed round (they did not answer in time, or dropped).",
            &[],
            s.traffic.dropouts.load(Ordering::Relaxed) as f64,
        );
        for (direction, n) in
            [("received", &s.traffic.secagg_received), ("relayed", &s.traffic.secagg_relayed)]
        {
            m.counter(
                "hearth_secagg_bytes_total",
                "Bytes of secure-aggregation protocol messages: received from participants, relayed to them.",
                &[("direction", direction)],
                n.load(Ordering::Relaxed) as f64,
            );
        }
        m.counter(
            "hearth_rounds_failed_total",
            "Round attempts that failed, over every job.",
            &[],
            failed as f64,
        );
        m.histogram(
            "hearth_round_duration_seconds",
            "Wall time of committed rounds, from opening to commit.",
            &[],
            &DURATION_BOUNDS,
            &rounds,
        );
        for (i, p) in phases.iter().enumerate().filter(|(_, p)| !p.is_empty()) {
            let phase = i.to_string();
            m.histogram(
                "hearth_secagg_phase_duration_seconds",
                "Duration of each secure-aggregation phase of committed rounds (0: key advertisement .. 5: unmasking).",
                &[("phase", phase.as_str())],
                &DURATION_BOUNDS,
                p,
            );
        }
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
        hearth_node::metrics::audit_metrics(&mut m, &s.audit);
        self.requests.render(&mut m);
        m.finish()
    }
}

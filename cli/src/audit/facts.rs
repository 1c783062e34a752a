//! The facts a compliance report states instead of trusting the record of processing: what the audit log
//! shows (how many rounds were securely aggregated or plainly averaged, how many updates left masked or in
//! the clear, the privacy spent per family) and what the participant's configuration sets (how long the
//! desk keeps each field). The template's `FROM THE LOG: ...` and `FROM THE CONFIGURATION: ...` values are
//! replaced by them; a value still saying `CHANGE ME` stops the report.

use std::collections::BTreeMap;

use hearth_audit::{Entry, Outcome};
use serde::Serialize;

/// Marks a value the report fills from the audit log.
pub(crate) const FROM_LOG: &str = "FROM THE LOG";
/// Marks a value the report fills from the participant's configuration.
pub(crate) const FROM_CONFIG: &str = "FROM THE CONFIGURATION";
/// Marks a value the operator must state.
pub(crate) const PLACEHOLDER: &str = "CHANGE ME";

/// Epsilon spent by one job or query, as this node's log records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Spent {
    pub(crate) family: String,
    /// `job ID` or `query ID`.
    pub(crate) release: String,
    pub(crate) epsilon: f64,
}

/// What the log shows about how training updates left and what privacy was spent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct LogFacts {
    /// Coordinator: rounds committed from a securely aggregated sum.
    pub(crate) secure_rounds: u64,
    /// Coordinator: rounds committed from plainly averaged updates (the coordinator saw each one).
    pub(crate) plain_rounds: u64,
    /// Participant: updates sent masked.
    pub(crate) masked_updates: u64,
    /// Participant: updates sent in the clear.
    pub(crate) clear_updates: u64,
    /// Participant: each DP job's and query's epsilon, as charged to the institution's own ledger.
    pub(crate) privacy_spent: Vec<Spent>,
}

impl LogFacts {
    /// Reads the facts from `entries` (successful operations only).
    pub(crate) fn of<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Self {
        let mut f = Self::default();
        let mut spent: BTreeMap<(String, String), f64> = BTreeMap::new();
        for e in entries.into_iter().filter(|e| e.outcome() == Outcome::Ok) {
            let d = e.detail();
            match e.action() {
                "round.commit" if d.contains("securely aggregated sum") => f.secure_rounds += 1,
                "round.commit" if d.contains("plain average") => f.plain_rounds += 1,
                "update.upload" if d.contains("masked update") => f.masked_updates += 1,
                "update.upload" if d.contains("in the clear") => f.clear_updates += 1,
                "budget.local_charge" => {
                    if let Some((family, release, epsilon)) = charge(d) {
                        let e = spent.entry((family, release)).or_insert(0.0);
                        // A job's entries carry its running total: the last (largest) is what it spent.
                        *e = e.max(epsilon);
                    }
                }
                _ => {}
            }
        }
        f.privacy_spent = spent
            .into_iter()
            .map(|((family, release), epsilon)| Spent { family, release, epsilon })
            .collect();
        f
    }

    /// Epsilon per family, summed over its jobs and queries (basic composition across releases).
    pub(crate) fn epsilon_by_family(&self) -> BTreeMap<&str, (f64, usize)> {
        let mut m: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
        for s in &self.privacy_spent {
            let e = m.entry(s.family.as_str()).or_insert((0.0, 0));
            e.0 += s.epsilon;
            e.1 += 1;
        }
        m
    }

    /// What the consortium coordinator received, in a sentence.
    pub(crate) fn coordinator_received(&self) -> String {
        let (secure, plain) =
            (self.secure_rounds + self.masked_updates, self.plain_rounds + self.clear_updates);
        match (secure, plain) {
            (0, 0) => "Consortium coordinator: no training round in this period".into(),
            (s, 0) => format!(
                "Consortium coordinator: received only securely aggregated sums of model updates ({s} rounds in \
                 this period)"
            ),
            (s, p) => format!(
                "Consortium coordinator: received individual model updates in the clear in {p} rounds (plain \
                 aggregation) and only securely aggregated sums in {s}"
            ),
        }
    }

    /// The protections applied, in a sentence.
    pub(crate) fn protections(&self) -> String {
        let plain = self.plain_rounds + self.clear_updates;
        let aggregation = if plain == 0 {
            "Secure aggregation in every training round of the period: no single update was visible"
                .to_string()
        } else {
            format!("Secure aggregation was off in {plain} training rounds of the period (plain aggregation)")
        };
        let by_family = self.epsilon_by_family();
        let dp = if by_family.is_empty() {
            "no differentially private release in this period".to_string()
        } else {
            let parts: Vec<String> = by_family
                .iter()
                .map(|(f, (eps, n))| format!("{f}: epsilon {eps:.4} over {n} release(s)"))
                .collect();
            format!("differential privacy charged to this institution's ledger: {}", parts.join("; "))
        };
        format!("{aggregation}; {dp}")
    }
}

/// (family, `job ID` or `query ID`, epsilon so far) from a `budget.local_charge` detail.
fn charge(detail: &str) -> Option<(String, String, f64)> {
    if let Some(rest) = detail.strip_prefix("query ") {
        let (id, rest) = rest.split_once(": charged to family ")?;
        let (family, eps) = rest.split_once(", epsilon ")?;
        return Some((family.to_string(), format!("query {id}"), eps.trim().parse().ok()?));
    }
    let rest = detail.strip_prefix("job ")?;
    let (id, rest) = rest.split_once(" round ")?;
    let (_, rest) = rest.split_once(" charged to family ")?;
    let (family, rest) = rest.split_once(" (this job so far: epsilon ")?;
    let eps = rest.strip_suffix(')')?;
    Some((family.to_string(), format!("job {id}"), eps.trim().parse().ok()?))
}

/// The desk's retention policy, in a sentence.
pub(crate) fn retention(r: &hearth_desk::policy::RetentionConfig) -> String {
    let fields: Vec<String> = r
        .fields
        .iter()
        .map(|(f, d)| {
            let name =
                serde_json::to_value(f).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
            format!("{name} {}", days(*d))
        })
        .collect();
    format!(
        "Per field of a stored message: {} (a field not listed is never stored); at most {} messages per \
         customer; a customer erased {} after their last message; finished workflow records {}",
        fields.join(", "),
        r.max_messages,
        days(r.customer),
        days(r.workflow)
    )
}

fn days(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s % 86_400 == 0 {
        format!("{} days", s / 86_400)
    } else {
        humantime::format_duration(d).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_read_from_both_kinds_of_detail() {
        assert_eq!(
            charge(
                "job demo-dp round 7: release 7 charged to family intent (this job so far: epsilon 2.5000)"
            ),
            Some(("intent".into(), "job demo-dp".into(), 2.5))
        );
        assert_eq!(
            charge("query q-1: charged to family cs-stats, epsilon 0.5000"),
            Some(("cs-stats".into(), "query q-1".into(), 0.5))
        );
        assert_eq!(charge("job x round 1: masked update, no privacy charge (not a DP job)"), None);
    }

    #[test]
    fn sentences_say_what_happened() {
        let mut f = LogFacts { secure_rounds: 4, ..Default::default() };
        assert!(f.coordinator_received().contains("only securely aggregated sums"));
        f.plain_rounds = 2;
        assert!(f.coordinator_received().contains("in the clear in 2 rounds"));
        assert!(f.protections().contains("off in 2 training rounds"));
        f.privacy_spent = vec![
            Spent { family: "intent".into(), release: "job a".into(), epsilon: 3.0 },
            Spent { family: "intent".into(), release: "job b".into(), epsilon: 1.5 },
        ];
        assert!(f.protections().contains("intent: epsilon 4.5000 over 2 release(s)"), "{}", f.protections());
        let r = retention(&hearth_desk::policy::RetentionConfig::default());
        assert!(r.contains("text 30 days") && r.contains("at most"), "{r}");
    }
}

//! Pure helpers over entries for `hearth audit query` (a [`Filter`]) and for the operations-log part of a
//! compliance report (a [`Summary`] of counts over a period). They read entries and never judge their
//! authenticity: run [`verify_export`](super::verify_export) first, and report on verified entries.

use std::collections::BTreeMap;

use serde::Serialize;

use super::entry::{Entry, Outcome};

/// Which entries to select. Every field set must match; an empty filter selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Earliest time, inclusive (ms since the Unix epoch).
    pub from_ms: Option<u64>,
    /// Latest time, exclusive.
    pub until_ms: Option<u64>,
    /// Exact actor.
    pub actor: Option<String>,
    /// Exact tenant.
    pub tenant: Option<String>,
    /// Exact action, or a family ending in `.*` (`update.*` matches `update.upload` but not `updates`).
    pub action: Option<String>,
    /// Exact outcome.
    pub outcome: Option<Outcome>,
}

impl Filter {
    /// Whether `e` is selected.
    pub fn matches(&self, e: &Entry) -> bool {
        self.from_ms.is_none_or(|t| e.time_ms() >= t)
            && self.until_ms.is_none_or(|t| e.time_ms() < t)
            && self.actor.as_deref().is_none_or(|a| e.actor() == a)
            && self.tenant.as_deref().is_none_or(|t| e.tenant() == Some(t))
            && self.outcome.is_none_or(|o| e.outcome() == o)
            && self.action.as_deref().is_none_or(|a| match a.strip_suffix('*') {
                Some(prefix) if prefix.ends_with('.') => e.action().starts_with(prefix),
                _ => e.action() == a,
            })
    }
}

/// The entries of `entries` that `filter` selects, in order.
pub fn query<'a, I>(entries: I, filter: &'a Filter) -> impl Iterator<Item = &'a Entry> + 'a
where
    I: IntoIterator<Item = &'a Entry>,
    I::IntoIter: 'a,
{
    entries.into_iter().filter(move |e| filter.matches(e))
}

/// Counts over the selected entries: the operations-log summary of a compliance report. Serialises to
/// JSON with outcomes as lower-case keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Entries selected.
    pub total: u64,
    /// First and last sequence numbers selected.
    pub seq_range: Option<(u64, u64)>,
    /// Earliest and latest times selected.
    pub time_range_ms: Option<(u64, u64)>,
    /// Count per outcome.
    pub by_outcome: BTreeMap<Outcome, u64>,
    /// Count per action, split by outcome.
    pub by_action: BTreeMap<String, BTreeMap<Outcome, u64>>,
    /// Count per actor, split by outcome.
    pub by_actor: BTreeMap<String, BTreeMap<Outcome, u64>>,
    /// Count per tenant; entries without a tenant are counted in [`Summary::without_tenant`].
    pub by_tenant: BTreeMap<String, u64>,
    /// Entries concerning no tenant.
    pub without_tenant: u64,
}

/// Summarises the entries `filter` selects.
pub fn summarize<'a>(entries: impl IntoIterator<Item = &'a Entry>, filter: &Filter) -> Summary {
    let mut s = Summary::default();
    for e in entries.into_iter().filter(|e| filter.matches(e)) {
        s.total += 1;
        s.seq_range = Some(s.seq_range.map_or((e.seq(), e.seq()), |(a, b)| (a.min(e.seq()), b.max(e.seq()))));
        let t = e.time_ms();
        s.time_range_ms = Some(s.time_range_ms.map_or((t, t), |(a, b)| (a.min(t), b.max(t))));
        *s.by_outcome.entry(e.outcome()).or_default() += 1;
        *s.by_action.entry(e.action().to_string()).or_default().entry(e.outcome()).or_default() += 1;
        *s.by_actor.entry(e.actor().to_string()).or_default().entry(e.outcome()).or_default() += 1;
        match e.tenant() {
            Some(t) => *s.by_tenant.entry(t.to_string()).or_default() += 1,
            None => s.without_tenant += 1,
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::entry::Event;
    use super::*;

    fn entries() -> Vec<Entry> {
        let rows = [
            ("urn:hearth:participant:a", Some("a"), "update.upload", Outcome::Ok, 100),
            ("urn:hearth:participant:b", Some("b"), "update.upload", Outcome::Refused, 200),
            ("urn:hearth:operator:ops", None, "job.submit", Outcome::Ok, 300),
            ("urn:hearth:participant:b", Some("b"), "updates", Outcome::Denied, 400),
            ("urn:hearth:participant:a", Some("a"), "update.download", Outcome::Ok, 500),
        ];
        rows.iter()
            .enumerate()
            .map(|(i, (actor, tenant, action, outcome, t))| {
                let mut ev = Event::new(*actor, crate::Action::NodeStart, *outcome);
                ev.action = action.to_string();
                ev.tenant = tenant.map(str::to_string);
                Entry::new(i as u64, *t, ev).unwrap()
            })
            .collect()
    }

    fn seqs(f: &Filter) -> Vec<u64> {
        let es = entries();
        query(&es, f).map(Entry::seq).collect()
    }

    #[test]
    fn filters_select_by_each_field() {
        assert_eq!(seqs(&Filter::default()), vec![0, 1, 2, 3, 4]);
        assert_eq!(
            seqs(&Filter { from_ms: Some(200), until_ms: Some(400), ..Default::default() }),
            vec![1, 2]
        );
        assert_eq!(
            seqs(&Filter { actor: Some("urn:hearth:participant:b".into()), ..Default::default() }),
            vec![1, 3]
        );
        assert_eq!(seqs(&Filter { tenant: Some("a".into()), ..Default::default() }), vec![0, 4]);
        assert_eq!(seqs(&Filter { action: Some("update.*".into()), ..Default::default() }), vec![0, 1, 4]);
        assert_eq!(seqs(&Filter { action: Some("update.upload".into()), ..Default::default() }), vec![0, 1]);
        assert_eq!(
            seqs(&Filter { outcome: Some(Outcome::Ok), tenant: Some("a".into()), ..Default::default() }),
            vec![0, 4]
        );
    }

    #[test]
    fn summary_counts_over_a_period() {
        let es = entries();
        let s = summarize(&es, &Filter { until_ms: Some(450), ..Default::default() });
        assert_eq!(s.total, 4);
        assert_eq!(s.seq_range, Some((0, 3)));
        assert_eq!(s.time_range_ms, Some((100, 400)));
        assert_eq!(s.by_outcome[&Outcome::Ok], 2);
        assert_eq!(s.by_action["update.upload"][&Outcome::Refused], 1);
        assert_eq!(s.by_actor["urn:hearth:participant:b"].values().sum::<u64>(), 2);
        assert_eq!(s.by_tenant["b"], 2);
        assert_eq!(s.without_tenant, 1);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["by_outcome"]["refused"], 1);
    }
}

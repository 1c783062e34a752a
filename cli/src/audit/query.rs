//! `hearth audit query`: select entries by time range, actor, tenant, action (exact or `family.*`) and
//! outcome, and print them as a table or as JSON lines (the canonical entries).

use hearth_audit::query::Filter;
use hearth_audit::Outcome;

use super::{entries, time, Source};

/// Arguments of `hearth audit query`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  hearth audit query export.jsonl --action 'update.*' --outcome refused\n  hearth audit query --state-dir /var/lib/hearth/coordinator --from 2026-11-01 --until 2026-12-01 --tenant bank-a\n  hearth audit query export.jsonl --actor participant:bank-a --json > bank-a.jsonl\n  hearth audit query export.jsonl --trusted-key @coordinator.vkeys --action 'key.*'\n\nTimes are UTC: 2026-11-25, 2026-11-25T14:30:00Z, or milliseconds since the epoch. --from is\ninclusive, --until exclusive. Entries are shown as recorded; pass --trusted-key to refuse a log that\ndoes not verify."
)]
pub struct QueryArgs {
    #[command(flatten)]
    pub source: Source,
    /// Earliest time (inclusive).
    #[arg(long)]
    pub from: Option<String>,
    /// Latest time (exclusive).
    #[arg(long)]
    pub until: Option<String>,
    /// Exact actor, e.g. participant:bank-a, system.
    #[arg(long)]
    pub actor: Option<String>,
    /// Exact tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Exact action, or a family such as `key.*`.
    #[arg(long)]
    pub action: Option<String>,
    /// ok, refused, denied or error.
    #[arg(long, value_parser = ["ok", "refused", "denied", "error"])]
    pub outcome: Option<String>,
    /// Show at most this many entries (the first ones).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print the selected entries as JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn outcome(s: &str) -> Option<Outcome> {
    match s {
        "ok" => Some(Outcome::Ok),
        "refused" => Some(Outcome::Refused),
        "denied" => Some(Outcome::Denied),
        "error" => Some(Outcome::Error),
        _ => None,
    }
}

pub fn run(a: QueryArgs) -> anyhow::Result<()> {
    let loaded = a.source.load()?;
    let filter = Filter {
        from_ms: a.from.as_deref().map(time::parse).transpose()?,
        until_ms: a.until.as_deref().map(time::parse).transpose()?,
        actor: a.actor,
        tenant: a.tenant,
        action: a.action,
        outcome: a.outcome.as_deref().and_then(outcome),
    };
    let selected = entries(&loaded).filter(|e| filter.matches(e)).take(a.limit.unwrap_or(usize::MAX));
    if a.json {
        for e in selected {
            println!("{}", String::from_utf8_lossy(&e.canonical()));
        }
        return Ok(());
    }
    println!(
        "{:>7}  {:<24}  {:<28}  {:<12}  {:<22}  {:<8}  detail",
        "seq", "time (UTC)", "actor", "tenant", "action", "outcome"
    );
    let mut n = 0;
    for e in selected {
        n += 1;
        let mut detail = e.detail().to_string();
        if !e.objects().is_empty() {
            detail = format!("[{}] {detail}", e.objects().join(", "));
        }
        println!(
            "{:>7}  {:<24}  {:<28}  {:<12}  {:<22}  {:<8}  {}",
            e.seq(),
            time::format(e.time_ms()),
            e.actor(),
            e.tenant().unwrap_or("-"),
            e.action(),
            e.outcome().as_str(),
            detail
        );
    }
    eprintln!("{n} of {} entries selected", loaded.bundle.entries.len());
    Ok(())
}

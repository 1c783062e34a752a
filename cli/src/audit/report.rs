//! `hearth audit report`: the compliance report an institution hands to its DPO or regulator, as JSON and
//! HTML: the record of processing activities (from a small TOML the operator keeps, with documented
//! defaults in `ropa.default.toml`), the audit log's verification status, and the operations-log
//! summary for a period (counts per action, actor, tenant and outcome; key operations, deletions,
//! refusals and denials listed).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use hearth_audit::query::{summarize, Filter, Summary};
use hearth_audit::{Entry, Outcome};
use serde::{Deserialize, Serialize};

use super::facts::{LogFacts, FROM_CONFIG, FROM_LOG, PLACEHOLDER};
use super::{entries, time, Source};

/// The default record of processing activities, documented field by field.
pub const ROPA_TEMPLATE: &str = include_str!("ropa.default.toml");

/// Arguments of `hearth audit report`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  hearth audit report --print-ropa-template > ropa.toml      # then edit it\n  hearth audit report export.jsonl --ropa ropa.toml --trusted-key @coordinator.vkeys \\\n      --from 2026-10-01 --until 2026-11-01 --html report.html --json report.json\n  hearth audit report --state-dir /var/lib/hearth/bank-a --ropa ropa.toml --config /etc/hearth/participant.toml --html report.html\n\nThe record of processing starts from the documented template: fields marked CHANGE ME are yours to\nstate, and the report refuses to run while one is left. What the coordinator received and the\nprivacy spent are taken from the log, the desk's retention from the participant's configuration\n(--config). With --trusted-key the log is verified first and the report refuses a log that does\nnot verify."
)]
pub struct ReportArgs {
    #[command(flatten)]
    pub source: Source,
    /// The record of processing activities (TOML); default: the built-in template.
    #[arg(long, value_name = "FILE")]
    pub ropa: Option<PathBuf>,
    /// Start of the period (inclusive, UTC).
    #[arg(long)]
    pub from: Option<String>,
    /// End of the period (exclusive, UTC).
    #[arg(long)]
    pub until: Option<String>,
    /// Write the HTML report here.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write the JSON report here (`-` for standard output).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// The participant's configuration: the desk's retention policy is stated from it (the template's
    /// `FROM THE CONFIGURATION` values).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the default record-of-processing TOML and exit.
    #[arg(long, exclusive = true)]
    pub print_ropa_template: bool,
}

/// The data controller.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Controller {
    name: String,
    contact: String,
    representative: String,
    dpo: String,
}

/// One processing activity.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Activity {
    name: String,
    purposes: Vec<String>,
    legal_basis: String,
    data_subjects: Vec<String>,
    data_categories: Vec<String>,
    recipients: Vec<String>,
    transfers: String,
    retention: String,
    security_measures: Vec<String>,
}

/// The record of processing activities.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ropa {
    controller: Controller,
    activities: Vec<Activity>,
}

impl Ropa {
    /// Every string value with its place in the record (`activities[1].retention`), for filling in.
    fn values_mut(&mut self) -> Vec<(String, &mut String)> {
        let c = &mut self.controller;
        let mut out: Vec<(String, &mut String)> = vec![
            ("controller.name".into(), &mut c.name),
            ("controller.contact".into(), &mut c.contact),
            ("controller.representative".into(), &mut c.representative),
            ("controller.dpo".into(), &mut c.dpo),
        ];
        for (i, a) in self.activities.iter_mut().enumerate() {
            let at = |f: &str| format!("activities[{i}].{f}");
            out.push((at("name"), &mut a.name));
            out.push((at("legal_basis"), &mut a.legal_basis));
            out.push((at("transfers"), &mut a.transfers));
            out.push((at("retention"), &mut a.retention));
            for (field, list) in [
                ("purposes", &mut a.purposes),
                ("data_subjects", &mut a.data_subjects),
                ("data_categories", &mut a.data_categories),
                ("recipients", &mut a.recipients),
                ("security_measures", &mut a.security_measures),
            ] {
                for (j, v) in list.iter_mut().enumerate() {
                    out.push((format!("activities[{i}].{field}[{j}]"), v));
                }
            }
        }
        out
    }

    /// Replaces the `FROM THE LOG` and `FROM THE CONFIGURATION` values with the facts, and refuses a
    /// record that still holds a `CHANGE ME` (or a configuration fact without `--config`), naming each.
    fn fill(&mut self, log: &LogFacts, retention: Option<&str>) -> anyhow::Result<()> {
        let mut open = Vec::new();
        for (path, v) in self.values_mut() {
            if v.starts_with(FROM_LOG) {
                *v = if v.contains("secure aggregation and differential privacy") {
                    log.protections()
                } else {
                    log.coordinator_received()
                };
            } else if v.starts_with(FROM_CONFIG) {
                match retention {
                    Some(r) => *v = r.to_string(),
                    None => open
                        .push(format!("{path} (from the participant's configuration: pass --config FILE)")),
                }
            } else if v.starts_with(PLACEHOLDER) {
                open.push(path);
            }
        }
        if !open.is_empty() {
            anyhow::bail!(
                "the record of processing is not complete; state these (in a copy of `hearth audit report \
                 --print-ropa-template`, passed with --ropa): {}",
                open.join(", ")
            );
        }
        Ok(())
    }

    /// The operator's file over the template: a section the file omits keeps the template's.
    fn load(path: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let template: Ropa = toml::from_str(ROPA_TEMPLATE).context("the built-in template")?;
        let Some(path) = path else { return Ok(template) };
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let value: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let mut ropa: Ropa =
            toml::from_str(&text).with_context(|| format!("{}: record of processing", path.display()))?;
        if !value.contains_key("controller") {
            ropa.controller = template.controller;
        }
        if !value.contains_key("activities") {
            ropa.activities = template.activities;
        }
        Ok(ropa)
    }
}

#[derive(Debug, Serialize)]
struct Listed {
    seq: u64,
    time: String,
    actor: String,
    tenant: Option<String>,
    action: String,
    outcome: String,
    objects: Vec<String>,
    detail: String,
}

impl From<&Entry> for Listed {
    fn from(e: &Entry) -> Self {
        Self {
            seq: e.seq(),
            time: time::format(e.time_ms()),
            actor: e.actor().into(),
            tenant: e.tenant().map(Into::into),
            action: e.action().into(),
            outcome: e.outcome().to_string(),
            objects: e.objects().to_vec(),
            detail: e.detail().into(),
        }
    }
}

#[derive(Debug, Serialize)]
struct LogStatus {
    origin: String,
    suite: String,
    entries: u64,
    checkpoints: usize,
    verified: bool,
    verified_size: Option<u64>,
    witnesses: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ComplianceReport {
    format: &'static str,
    generated_at: String,
    period: (Option<String>, Option<String>),
    record_of_processing: Ropa,
    /// What the log shows: rounds and updates by aggregation, privacy spent per release.
    facts: LogFacts,
    audit_log: LogStatus,
    operations: Summary,
    key_operations: Vec<Listed>,
    data_deletions: Vec<Listed>,
    refusals_and_denials: Vec<Listed>,
    refusals_and_denials_omitted: usize,
}

const MAX_LISTED: usize = 200;

pub fn run(a: ReportArgs) -> anyhow::Result<ExitCode> {
    if a.print_ropa_template {
        print!("{ROPA_TEMPLATE}");
        return Ok(ExitCode::SUCCESS);
    }
    if a.html.is_none() && a.json.is_none() {
        anyhow::bail!("say where to write the report: --html FILE and/or --json FILE");
    }
    let mut ropa = Ropa::load(a.ropa.as_deref())?;
    let retention = match &a.config {
        Some(path) => {
            let c: hearth_participant::ParticipantConfig =
                crate::config::load(Some(path), "HEARTH_PARTICIPANT")?;
            Some(super::facts::retention(&c.service.retention))
        }
        None => None,
    };
    let loaded = a.source.load()?;
    let filter = Filter {
        from_ms: a.from.as_deref().map(time::parse).transpose()?,
        until_ms: a.until.as_deref().map(time::parse).transpose()?,
        ..Default::default()
    };
    let selected: Vec<&Entry> = entries(&loaded).filter(|e| filter.matches(e)).collect();
    let facts = LogFacts::of(selected.iter().copied());
    ropa.fill(&facts, retention.as_deref())?;
    let list = |pred: &dyn Fn(&Entry) -> bool| -> Vec<Listed> {
        selected.iter().filter(|e| pred(e)).map(|e| Listed::from(*e)).collect()
    };
    let mut refusals = list(&|e| matches!(e.outcome(), Outcome::Refused | Outcome::Denied));
    let omitted = refusals.len().saturating_sub(MAX_LISTED);
    refusals.truncate(MAX_LISTED);
    let b = &loaded.bundle;
    let witnesses = loaded
        .verified
        .as_ref()
        .map(|r| {
            let mut w: Vec<String> =
                r.checkpoints.iter().flat_map(|c| c.cosignatures.iter().map(|s| s.witness.clone())).collect();
            w.sort();
            w.dedup();
            w
        })
        .unwrap_or_default();
    let report = ComplianceReport {
        format: "hearth-compliance-report/v1",
        generated_at: time::format(hearth_node::audit::now_ms()),
        period: (a.from.clone(), a.until.clone()),
        record_of_processing: ropa,
        facts,
        audit_log: LogStatus {
            origin: b.origin.clone(),
            suite: b.suite.to_string(),
            entries: b.entries.len() as u64,
            checkpoints: b.checkpoints.len(),
            verified: loaded.verified.is_some(),
            verified_size: loaded.verified.as_ref().map(|r| r.verified_size),
            witnesses,
        },
        operations: summarize(selected.iter().copied(), &Filter::default()),
        key_operations: list(&|e| e.action().starts_with("key.")),
        data_deletions: list(&|e| e.action().starts_with("data.delete")),
        refusals_and_denials: refusals,
        refusals_and_denials_omitted: omitted,
    };
    let _ = loaded.bytes.len();
    if let Some(p) = &a.json {
        let text = serde_json::to_string_pretty(&report)?;
        if p.as_os_str() == "-" {
            println!("{text}");
        } else {
            std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
            eprintln!("wrote {}", p.display());
        }
    }
    if let Some(p) = &a.html {
        std::fs::write(p, html(&report)).with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn ul(items: &[String]) -> String {
    let mut s = String::from("<ul>");
    for i in items {
        let _ = write!(s, "<li>{}</li>", esc(i));
    }
    s.push_str("</ul>");
    s
}

fn table(rows: &[Listed]) -> String {
    if rows.is_empty() {
        return "<p>None in this period.</p>".into();
    }
    let mut s = String::from(
        "<table><tr><th>seq</th><th>time (UTC)</th><th>actor</th><th>tenant</th><th>action</th><th>outcome</th><th>objects</th><th>detail</th></tr>",
    );
    for r in rows {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.seq,
            esc(&r.time),
            esc(&r.actor),
            esc(r.tenant.as_deref().unwrap_or("-")),
            esc(&r.action),
            esc(&r.outcome),
            esc(&r.objects.join(", ")),
            esc(&r.detail)
        );
    }
    s.push_str("</table>");
    s
}

fn counts<K: std::fmt::Display>(
    title: &str,
    m: &std::collections::BTreeMap<K, std::collections::BTreeMap<Outcome, u64>>,
) -> String {
    let mut s = format!(
        "<h3>{}</h3><table><tr><th></th><th>ok</th><th>refused</th><th>denied</th><th>error</th></tr>",
        esc(title)
    );
    for (k, by) in m {
        let n = |o| by.get(&o).copied().unwrap_or(0);
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&k.to_string()),
            n(Outcome::Ok),
            n(Outcome::Refused),
            n(Outcome::Denied),
            n(Outcome::Error)
        );
    }
    s.push_str("</table>");
    s
}

fn html(r: &ComplianceReport) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Hearth compliance report: {origin}</title>\
         <style>body{{font-family:sans-serif;max-width:70em;margin:2em auto;line-height:1.4}}table{{border-collapse:collapse;margin:.5em 0}}\
         td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}}th{{background:#f3f3f3}}.bad{{color:#a00}}</style></head><body>\
         <h1>Compliance report</h1><p>Audit log <b>{origin}</b>, generated {gen}; period {from} to {until}.</p>",
        origin = esc(&r.audit_log.origin),
        gen = esc(&r.generated_at),
        from = esc(r.period.0.as_deref().unwrap_or("the beginning")),
        until = esc(r.period.1.as_deref().unwrap_or("now")),
    );
    let c = &r.record_of_processing.controller;
    let _ = write!(
        s,
        "<h2>1. Record of processing activities</h2><p>Controller: {} ({}); data protection officer: {}{}</p>",
        esc(&c.name),
        esc(&c.contact),
        esc(&c.dpo),
        if c.representative.is_empty() { String::new() } else { format!("; representative: {}", esc(&c.representative)) }
    );
    for a in &r.record_of_processing.activities {
        let _ = write!(
            s,
            "<h3>{}</h3><table><tr><th>Purposes</th><td>{}</td></tr><tr><th>Legal basis</th><td>{}</td></tr>\
             <tr><th>Data subjects</th><td>{}</td></tr><tr><th>Data categories</th><td>{}</td></tr>\
             <tr><th>Recipients</th><td>{}</td></tr><tr><th>Transfers</th><td>{}</td></tr>\
             <tr><th>Retention</th><td>{}</td></tr><tr><th>Security measures</th><td>{}</td></tr></table>",
            esc(&a.name),
            ul(&a.purposes),
            esc(&a.legal_basis),
            ul(&a.data_subjects),
            ul(&a.data_categories),
            ul(&a.recipients),
            esc(&a.transfers),
            esc(&a.retention),
            ul(&a.security_measures)
        );
    }
    let f = &r.facts;
    let _ = write!(
        s,
        "<h3>What the log shows</h3><table><tr><th>Rounds committed from a secure sum (coordinator)</th><td>{}</td></tr>\
         <tr><th>Rounds plainly averaged (coordinator)</th><td>{}</td></tr><tr><th>Updates sent masked (participant)</th><td>{}</td></tr>\
         <tr><th>Updates sent in the clear (participant)</th><td>{}</td></tr></table>",
        f.secure_rounds, f.plain_rounds, f.masked_updates, f.clear_updates
    );
    if f.privacy_spent.is_empty() {
        s.push_str("<p>No differentially private release was charged in this period.</p>");
    } else {
        s.push_str("<table><tr><th>family</th><th>release</th><th>epsilon</th></tr>");
        for x in &f.privacy_spent {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{:.4}</td></tr>",
                esc(&x.family),
                esc(&x.release),
                x.epsilon
            );
        }
        s.push_str("</table>");
    }
    let l = &r.audit_log;
    let verified = match (l.verified, l.verified_size) {
        (true, Some(n)) => {
            format!("verified: entries 0..{n} reproduce checkpoints signed by the trusted log keys")
        }
        _ => "<span class=\"bad\">not verified in this report (pass --trusted-key)</span>".into(),
    };
    let _ = write!(
        s,
        "<h2>2. Audit log</h2><p>{} entries, {} checkpoints, {} suite; {}.{}</p>",
        l.entries,
        l.checkpoints,
        esc(&l.suite),
        verified,
        if l.witnesses.is_empty() {
            String::new()
        } else {
            format!(" Cosigned by witnesses: {}.", esc(&l.witnesses.join(", ")))
        }
    );
    let o = &r.operations;
    let range = o
        .time_range_ms
        .map(|(a, b)| format!("{} to {}", time::format(a), time::format(b)))
        .unwrap_or_else(|| "no entries".into());
    let _ = write!(s, "<h2>3. Operations log summary</h2><p>{} entries ({range}).</p>", o.total);
    s.push_str(&counts("By action", &o.by_action));
    s.push_str(&counts("By actor", &o.by_actor));
    let _ = write!(s, "<h3>By tenant</h3><table><tr><th>tenant</th><th>entries</th></tr>");
    for (t, n) in &o.by_tenant {
        let _ = write!(s, "<tr><td>{}</td><td>{n}</td></tr>", esc(t));
    }
    let _ = write!(s, "<tr><td>(no tenant)</td><td>{}</td></tr></table>", o.without_tenant);
    let _ = write!(s, "<h2>4. Key operations</h2>{}", table(&r.key_operations));
    let _ = write!(s, "<h2>5. Data deletions</h2>{}", table(&r.data_deletions));
    let _ = write!(s, "<h2>6. Refused and denied requests</h2>{}", table(&r.refusals_and_denials));
    if r.refusals_and_denials_omitted > 0 {
        let _ = write!(
            s,
            "<p>… and {} more (see the JSON report or `hearth audit query`).</p>",
            r.refusals_and_denials_omitted
        );
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_parses_and_a_partial_file_keeps_the_rest() {
        let t = Ropa::load(None).unwrap();
        assert_eq!(t.activities.len(), 2);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ropa.toml");
        std::fs::write(&f, "[controller]\nname = \"Bank A\"\n").unwrap();
        let r = Ropa::load(Some(&f)).unwrap();
        assert_eq!(r.controller.name, "Bank A");
        assert_eq!(r.activities.len(), 2, "activities from the template");
        std::fs::write(&f, "[controller]\nnmae = \"typo\"\n").unwrap();
        assert!(format!("{:#}", Ropa::load(Some(&f)).unwrap_err()).contains("nmae"));
        assert_eq!(esc("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
    }

    #[test]
    fn the_template_is_refused_until_its_placeholders_are_stated() {
        let mut ropa = Ropa::load(None).unwrap();
        let e = ropa.fill(&LogFacts::default(), None).unwrap_err().to_string();
        for field in
            ["controller.name", "controller.dpo", "activities[0].legal_basis", "activities[1].retention"]
        {
            assert!(e.contains(field), "{field}: {e}");
        }
        let mut ropa = Ropa::load(None).unwrap();
        for (_, v) in ropa.values_mut() {
            if v.starts_with(PLACEHOLDER) {
                *v = "stated".into();
            }
        }
        let facts = LogFacts { plain_rounds: 3, ..Default::default() };
        ropa.fill(&facts, Some("text 30 days")).unwrap();
        let training = &ropa.activities[0];
        assert!(training.recipients.iter().any(|r| r.contains("in the clear in 3 rounds")), "{training:?}");
        assert!(training.security_measures.iter().any(|m| m.contains("no differentially private release")));
        assert_eq!(ropa.activities[1].retention, "text 30 days");
    }
}

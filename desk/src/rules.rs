//! Routing and workflow rules: a TOML file business staff edit, checked as a whole before it serves, and
//! reloaded without a restart (the file's modification time is polled; `POST /v1/admin/rules/reload`
//! reloads at once and answers with the error). A file with an error is refused with a message naming
//! the line or the rule and field, and the rules already serving stay in place.
//!
//! Evaluation ([`Rules::decide`]): rules run in file order; a rule fires when every condition it states
//! holds (an unstated condition always holds; an emotion condition never holds when no emotion model
//! answered). The first fired rule that sets `route` decides the route, likewise `priority`; every fired
//! rule adds its `reply` and starts its `workflow`; `stop = true` ends the evaluation. With no route set,
//! `[defaults] route` applies. The format is in README.md ("Rule files").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::error::{FieldFault, RuleProblem, RulesError};

/// The rules file shipped with the participant, written to the configured path on first start: an angry
/// customer goes to the senior queue and a compensation workflow starts.
pub const DEFAULT_RULES: &str = include_str!("../rules/default.toml");

/// The channels a message may arrive on.
pub const CHANNELS: [&str; 6] = ["app", "web", "wechat", "sms", "email", "phone"];

/// Where a conversation goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// An answer from the help centre, no agent.
    SelfService,
    /// The chat bot.
    Bot,
    /// The human agents' queue.
    Human,
    /// The senior agents' queue.
    Senior,
}

/// How urgent it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Whenever convenient.
    Low,
    /// The usual.
    Normal,
    /// Before the usual.
    High,
    /// Now.
    Urgent,
}

/// A rule's conditions; every stated one must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// The intent label is one of these.
    pub intent: Option<Vec<String>>,
    /// The intent's confidence is at least this.
    pub min_confidence: Option<f32>,
    /// The message is (or is not) out of the intent model's scope.
    pub out_of_scope: Option<bool>,
    /// One of the emotion model's labels for the message is one of these.
    pub emotion: Option<Vec<String>>,
    /// The emotion model's escalation rule fired (or did not).
    pub escalate: Option<bool>,
    /// The customer's tier (as the app sent it) is one of these.
    pub tier: Option<Vec<String>>,
    /// The message came through one of these channels.
    pub channel: Option<Vec<String>>,
}

/// What a fired rule does.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Then {
    /// Route the conversation (the first fired rule with a route decides).
    pub route: Option<Route>,
    /// Set the priority (the first fired rule with one decides).
    pub priority: Option<Priority>,
    /// Suggest the reply of this template.
    pub reply: Option<String>,
    /// Start this workflow.
    pub workflow: Option<String>,
    /// Evaluate no further rules.
    #[serde(default)]
    pub stop: bool,
}

/// One rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Its name, reported in `rules_fired`.
    pub name: String,
    /// Its conditions.
    #[serde(default)]
    pub when: When,
    /// Its actions.
    pub then: Then,
}

/// What applies when no rule says.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// The route when no fired rule set one.
    pub route: Route,
    /// The priority when no fired rule set one.
    pub priority: Priority,
}

impl Default for Defaults {
    fn default() -> Self {
        Self { route: Route::Bot, priority: Priority::Normal }
    }
}

/// One step of a workflow: a webhook called with a JSON body and an `Idempotency-Key` header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    /// Its name, unique in the workflow (part of the idempotency key).
    pub name: String,
    /// The full URL (`http://host:port/path`), or
    #[serde(default)]
    pub url: Option<String>,
    /// a path appended to the file's `webhook_base`.
    #[serde(default)]
    pub path: Option<String>,
    /// Deadline of one attempt.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts after the first one fails in a way worth retrying (a timeout, a failed connection, or
    /// an answer of 408, 429 or 5xx; any other non-2xx answer fails the step at once).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Wait before the first retry, at most 30000; doubled for each further one (capped at 30 s), each
    /// wait drawn between half of it and all of it; an answer's `Retry-After` replaces it.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
}

fn default_timeout_ms() -> u64 {
    5_000
}
fn default_retries() -> u32 {
    3
}
fn default_backoff_ms() -> u64 {
    200
}

/// A workflow's steps, run in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDef {
    /// The steps.
    pub steps: Vec<StepDef>,
}

/// Where an agent's reply to a customer on one channel is delivered: a webhook (the channel's gateway)
/// called like a workflow step, with the same retries and signing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyRoute {
    /// The full URL, or
    #[serde(default)]
    pub url: Option<String>,
    /// a path appended to the file's `webhook_base`.
    #[serde(default)]
    pub path: Option<String>,
    /// Deadline of one attempt.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts after the first, as for a step.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Wait before the first retry, as for a step.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
}

/// A rules file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    webhook_base: Option<String>,
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    templates: BTreeMap<String, String>,
    #[serde(default)]
    rule: Vec<Rule>,
    #[serde(default)]
    workflows: BTreeMap<String, WorkflowDef>,
    #[serde(default)]
    replies: BTreeMap<String, ReplyRoute>,
}

/// A checked rules file, serving.
#[derive(Debug, Clone)]
pub struct Rules {
    defaults: Defaults,
    templates: BTreeMap<String, String>,
    rules: Vec<Rule>,
    /// Each workflow's steps, with every step's URL resolved into `url`.
    pub workflows: BTreeMap<String, Vec<StepDef>>,
    /// Per channel, the one step that delivers an agent's reply (named `deliver`, URL resolved).
    pub replies: BTreeMap<String, StepDef>,
}

/// What a message is known to be, for the rules.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    /// Intent label, confidence and whether out of scope; `None` without an intent model.
    pub intent: Option<(&'a str, f32, bool)>,
    /// The emotion labels and the escalation flag; `None` without an emotion model.
    pub emotion: Option<(&'a [String], bool)>,
    /// The customer's tier, if the app sent one.
    pub tier: Option<&'a str>,
    /// The channel.
    pub channel: &'a str,
}

/// What the rules decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Where the conversation goes.
    pub route: Route,
    /// How urgent it is.
    pub priority: Priority,
    /// Suggested replies, from the templates of fired rules.
    pub replies: Vec<String>,
    /// Workflows to start.
    pub workflows: Vec<String>,
    /// The rules that fired, in order.
    pub fired: Vec<String>,
}

fn any_of(list: &Option<Vec<String>>, value: Option<&str>) -> bool {
    match list {
        None => true,
        Some(l) => value.is_some_and(|v| l.iter().any(|x| x == v)),
    }
}

impl When {
    fn holds(&self, f: &Facts<'_>) -> bool {
        let intent = f.intent.map(|(l, _, _)| l);
        any_of(&self.intent, intent)
            && self.min_confidence.is_none_or(|m| f.intent.is_some_and(|(_, c, _)| c >= m))
            && self.out_of_scope.is_none_or(|o| f.intent.is_some_and(|(_, _, oos)| oos == o))
            && self.emotion.as_ref().is_none_or(|want| {
                f.emotion.is_some_and(|(labels, _)| labels.iter().any(|l| want.contains(l)))
            })
            && self.escalate.is_none_or(|e| f.emotion.is_some_and(|(_, esc)| esc == e))
            && any_of(&self.tier, f.tier)
            && any_of(&self.channel, Some(f.channel))
    }
}

/// A step checked (its name, URL, deadline, retries and backoff) with its URL resolved against `base`;
/// the error names the step `at`.
fn checked_step(s: StepDef, base: Option<&str>, at: &str) -> Result<StepDef, RuleProblem> {
    let fault = |fault: FieldFault| RuleProblem::Field { at: at.to_string(), fault };
    let well_formed = (1..=64).contains(&s.name.len())
        && s.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !well_formed {
        return Err(fault(FieldFault::StepName));
    }
    let url = match (&s.url, &s.path, base) {
        (Some(u), None, _) => u.clone(),
        (None, Some(p), Some(b)) => format!("{}{}", b.trim_end_matches('/'), p),
        (None, Some(_), None) => return Err(fault(FieldFault::PathWithoutBase)),
        _ => return Err(fault(FieldFault::UrlOrPath)),
    };
    crate::webhook::Target::parse(&url).map_err(|e| fault(e.into()))?;
    if s.timeout_ms == 0 || s.timeout_ms > 120_000 {
        return Err(fault(FieldFault::Timeout));
    }
    if s.retries > 20 {
        return Err(fault(FieldFault::Retries));
    }
    if s.backoff_ms > 30_000 {
        return Err(fault(FieldFault::Backoff));
    }
    Ok(StepDef { url: Some(url), path: None, ..s })
}

impl Rules {
    /// Parses and checks a rules file; the error names the line (syntax, unknown or mistyped field) or
    /// the rule and field (a reference to a missing template or workflow, a bad URL).
    pub fn parse(text: &str) -> Result<Self, RuleProblem> {
        let file: RulesFile =
            toml::from_str(text).map_err(|e| RuleProblem::Syntax(e.to_string().trim_end().to_string()))?;
        let mut seen = std::collections::BTreeSet::new();
        for (i, r) in file.rule.iter().enumerate() {
            let at = || format!("rule #{} ({:?})", i + 1, r.name);
            let fault = |fault: FieldFault| RuleProblem::Field { at: at(), fault };
            if r.name.trim().is_empty() || !seen.insert(r.name.clone()) {
                return Err(fault(FieldFault::RuleName));
            }
            if let Some(t) = r.then.reply.as_ref().filter(|t| !file.templates.contains_key(*t)) {
                return Err(fault(FieldFault::MissingTemplate(t.clone())));
            }
            if let Some(w) = r.then.workflow.as_ref().filter(|w| !file.workflows.contains_key(*w)) {
                return Err(fault(FieldFault::MissingWorkflow(w.clone())));
            }
            if let Some(c) = r.when.channel.iter().flatten().find(|c| !CHANNELS.contains(&c.as_str())) {
                return Err(fault(FieldFault::UnknownChannel {
                    given: c.clone(),
                    known: CHANNELS.join(", "),
                }));
            }
            if r.when.min_confidence.is_some_and(|m| !(0.0..=1.0).contains(&m)) {
                return Err(fault(FieldFault::Confidence));
            }
        }
        let mut workflows = BTreeMap::new();
        for (name, w) in file.workflows {
            let mut steps = Vec::new();
            if w.steps.is_empty() {
                return Err(RuleProblem::NoSteps(name));
            }
            for (i, s) in w.steps.into_iter().enumerate() {
                let at = format!("workflows.{name}.steps #{} ({:?})", i + 1, s.name);
                let step = checked_step(s, file.webhook_base.as_deref(), &at)?;
                if steps.iter().any(|p: &StepDef| p.name == step.name) {
                    return Err(RuleProblem::Field { at, fault: FieldFault::StepName });
                }
                steps.push(step);
            }
            workflows.insert(name, steps);
        }
        let mut replies = BTreeMap::new();
        for (channel, r) in file.replies {
            let at = format!("replies.{channel}");
            if !CHANNELS.contains(&channel.as_str()) {
                let fault = FieldFault::UnknownChannel { given: channel.clone(), known: CHANNELS.join(", ") };
                return Err(RuleProblem::Field { at, fault });
            }
            let step = StepDef {
                name: "deliver".into(),
                url: r.url,
                path: r.path,
                timeout_ms: r.timeout_ms,
                retries: r.retries,
                backoff_ms: r.backoff_ms,
            };
            replies.insert(channel, checked_step(step, file.webhook_base.as_deref(), &at)?);
        }
        Ok(Self { defaults: file.defaults, templates: file.templates, rules: file.rule, workflows, replies })
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Runs the rules over a message's facts.
    pub fn decide(&self, facts: &Facts<'_>) -> Decision {
        let (mut route, mut priority) = (None, None);
        let mut d = Decision {
            route: self.defaults.route,
            priority: self.defaults.priority,
            replies: Vec::new(),
            workflows: Vec::new(),
            fired: Vec::new(),
        };
        for r in &self.rules {
            if !r.when.holds(facts) {
                continue;
            }
            d.fired.push(r.name.clone());
            route = route.or(r.then.route);
            priority = priority.or(r.then.priority);
            if let Some(t) = r.then.reply.as_ref().and_then(|t| self.templates.get(t)) {
                d.replies.push(t.clone());
            }
            if let Some(w) = &r.then.workflow {
                if !d.workflows.contains(w) {
                    d.workflows.push(w.clone());
                }
            }
            if r.then.stop {
                break;
            }
        }
        d.route = route.unwrap_or(d.route);
        d.priority = priority.unwrap_or(d.priority);
        d
    }
}

/// The serving rules and the file they came from; reloading swaps them atomically, so a request sees
/// one version entirely.
#[derive(Debug)]
pub struct RuleSet {
    path: PathBuf,
    current: ArcSwap<Rules>,
    /// Modification time of the file last loaded or refused, so a refused file is not re-read each poll.
    seen: Mutex<Option<SystemTime>>,
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reads and checks the rules file at `path`.
fn read(path: &Path) -> Result<Rules, RulesError> {
    let text = std::fs::read_to_string(path).map_err(|source| RulesError::Io {
        doing: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    Rules::parse(&text).map_err(|problem| RulesError::Invalid { path: path.to_path_buf(), problem })
}

impl RuleSet {
    /// Loads `path`, writing [`DEFAULT_RULES`] there first if it does not exist. A bad file at start is
    /// an error: there are no older rules to keep serving.
    pub fn open(path: &Path) -> Result<Self, RulesError> {
        let io = |doing: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| RulesError::Io { doing, path, source }
        };
        if !path.exists() {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
            }
            std::fs::write(path, DEFAULT_RULES).map_err(io("writing", path))?;
        }
        let seen = mtime(path);
        let rules = read(path)?;
        Ok(Self { path: path.to_path_buf(), current: ArcSwap::from_pointee(rules), seen: Mutex::new(seen) })
    }

    /// The rules serving now.
    pub fn current(&self) -> Arc<Rules> {
        self.current.load_full()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the file; on an error the serving rules stay and the error names the file.
    pub fn reload(&self) -> Result<Arc<Rules>, RulesError> {
        let m = mtime(&self.path);
        // A poisoned lock only means a panic elsewhere mid-assignment of an Option: the value is usable.
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = m;
        let rules = Arc::new(read(&self.path)?);
        self.current.store(Arc::clone(&rules));
        Ok(rules)
    }

    /// Reloads if the file changed since the last load or refusal; `None` when it did not change.
    pub fn reload_if_changed(&self) -> Option<Result<Arc<Rules>, RulesError>> {
        let m = mtime(&self.path);
        if *self.seen.lock().unwrap_or_else(|p| p.into_inner()) == m {
            return None;
        }
        Some(self.reload())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::UrlError;

    fn facts<'a>(labels: &'a [String], escalate: bool, channel: &'a str) -> Facts<'a> {
        Facts { intent: Some(("refund", 0.9, false)), emotion: Some((labels, escalate)), tier: None, channel }
    }

    #[test]
    fn the_default_file_sends_an_angry_customer_to_seniors_and_starts_compensation() {
        let rules = Rules::parse(DEFAULT_RULES).unwrap();
        let anger = vec!["anger".to_string()];
        let d = rules.decide(&facts(&anger, true, "email"));
        assert_eq!(d.route, Route::Senior);
        assert_eq!(d.priority, Priority::Urgent);
        assert_eq!(d.workflows, ["compensation"]);
        assert!(!d.replies.is_empty());
        let calm = vec!["neutral".to_string()];
        let d = rules.decide(&facts(&calm, false, "app"));
        assert_ne!(d.route, Route::Senior);
        assert!(d.workflows.is_empty());
        // Without an emotion model, no emotion condition holds.
        let d = rules.decide(&Facts { channel: "app", ..Default::default() });
        assert!(d.workflows.is_empty());
        assert!(rules.workflows["compensation"].iter().all(|s| s
            .url
            .as_deref()
            .unwrap()
            .starts_with("http://")));
    }

    #[test]
    fn first_route_wins_replies_accumulate_and_stop_stops() {
        let rules = Rules::parse(
            r#"
            [templates]
            a = "A"
            b = "B"
            [[rule]]
            name = "one"
            when = { channel = ["sms"] }
            then = { route = "human", reply = "a" }
            [[rule]]
            name = "two"
            then = { route = "senior", reply = "b", stop = true }
            [[rule]]
            name = "three"
            then = { priority = "urgent" }
            "#,
        )
        .unwrap();
        let d = rules.decide(&Facts { channel: "sms", ..Default::default() });
        assert_eq!((d.route, d.priority), (Route::Human, Priority::Normal));
        assert_eq!(d.replies, ["A", "B"]);
        assert_eq!(d.fired, ["one", "two"]);
    }

    #[test]
    fn bad_files_are_refused_with_the_line_or_the_rule_and_field() {
        let refused = |text: &str| Rules::parse(text).unwrap_err();
        let e = refused("[[rule]]\nname = \"x\"\nthen = { route = \"moon\" }\n").to_string();
        assert!(e.contains("line 3") && e.contains("moon"), "{e}");
        let e =
            refused("[[rule]]\nname = \"x\"\nthen = { route = \"bot\" }\nwhen = { mood = 1 }\n").to_string();
        assert!(e.contains("line 4") && e.contains("mood"), "{e}");
        let e = refused("[[rule]]\nname = \"x\"\nthen = { reply = \"nope\" }\n");
        assert!(
            matches!(&e, RuleProblem::Field { fault: FieldFault::MissingTemplate(t), .. } if t == "nope")
        );
        assert!(e.to_string().contains("rule #1 (\"x\")") && e.to_string().contains("then.reply"), "{e}");
        let e = refused("[[rule]]\nname = \"x\"\nthen = { workflow = \"w\" }\n");
        assert!(e.to_string().contains("then.workflow"), "{e}");
        let e = refused("[workflows.w]\nsteps = [{ name = \"s\", url = \"ftp://x/\" }]\n");
        assert!(matches!(&e, RuleProblem::Field { fault: FieldFault::Url(UrlError::Scheme(_)), .. }), "{e}");
        assert!(e.to_string().contains("workflows.w.steps #1") && e.to_string().contains("http"), "{e}");
        let e = refused("[[rule]]\nname = \"x\"\nwhen = { channel = [\"fax\"] }\nthen = {}\n");
        assert!(e.to_string().contains("fax"), "{e}");
        assert!(matches!(refused("this is not toml"), RuleProblem::Syntax(m) if m.contains("line 1")));
        // A step's name goes into headers; its first backoff is bounded like the later ones.
        for name in ["", "crédit", "a b", "x\\r\\ny", &"n".repeat(65)] {
            let e =
                refused(&format!("[workflows.w]\nsteps = [{{ name = \"{name}\", url = \"http://x/\" }}]\n"));
            assert!(matches!(&e, RuleProblem::Field { fault: FieldFault::StepName, .. }), "{name:?}: {e}");
        }
        let e =
            refused("[workflows.w]\nsteps = [{ name = \"s\", url = \"http://x/\", backoff_ms = 30001 }]\n");
        assert!(e.to_string().contains("backoff_ms must be at most 30000"), "{e}");
    }

    #[test]
    fn a_bad_reload_keeps_the_old_rules() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.toml");
        let set = RuleSet::open(&path).unwrap();
        let before = set.current().len();
        assert!(before > 0, "the default file was written");
        std::fs::write(&path, "[[rule]]\nname = 1\n").unwrap();
        let e = set.reload().unwrap_err().to_string();
        assert!(e.contains("rules.toml") && e.contains("line 2"), "{e}");
        assert_eq!(set.current().len(), before);
        assert!(set.reload_if_changed().is_none(), "a refused file is not re-read until it changes");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, "[[rule]]\nname = \"only\"\nthen = { route = \"human\" }\n").unwrap();
        assert_eq!(set.reload_if_changed().expect("changed").unwrap().len(), 1);
        assert_eq!(set.current().len(), 1);
        assert!(set.reload_if_changed().is_none());
    }
}

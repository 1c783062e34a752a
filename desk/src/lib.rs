//! The desk: the customer-service core each institution runs for its apps and agents. `POST /v1/messages`
//! takes a message from any channel with whatever identifiers the channel has, and answers who the
//! customer is (a pseudonymous id), which session this continues, what they want and feel (the
//! participant's own served models, in process), where the conversation goes and which workflow
//! starts, and which rules decided it. It keeps as little as it can: identifiers only as keyed hashes,
//! message fields only as the policy allows and for as long, everything sealed at rest.
//!
//! Start reading at [`Desk::message`] (its request and answer are in [`messages`]). Then:
//! - [`identity`]: identifiers checked, normalised and hashed under the node's `identity-hash` key;
//! - [`state`]: customers, links and sessions in memory, and the linking rules;
//! - [`policy`]: the data minimisation policy (what is stored, for how long);
//! - [`rules`]: the routing and workflow rules file, reloaded without restart;
//! - [`workflows`] and [`webhook`]: workflow runs calling webhooks, resumable;
//! - [`store`]: `service.redb`, sealed records written behind the requests in groups;
//! - [`api`]: the HTTP endpoints, who may call which, and the loopback API-key listener;
//! - [`openapi`]: the OpenAPI document of every endpoint.
//!
//! Nothing here logs a message's text or an identifier.
//!
//! The desk holds customers' personal data and never sees a model delta: it reads the served models
//! through `hearth_inference::Slots` and knows nothing of the federation client, which holds training
//! data and never sees a customer identifier. The participant process mounts [`api::mtls`] on its port.
#![forbid(unsafe_code)]

pub mod agents;
pub mod api;
pub mod config;
pub mod error;
pub mod identity;
pub mod messages;
pub mod openapi;
pub mod policy;
pub mod rules;
pub mod state;
pub mod store;
pub mod webhook;
pub mod workflows;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use hearth_audit::{Action, Event, Outcome};
use hearth_node::audit::AuditLog;
use hearth_node::keys::NodeKeys;
use serde::Serialize;

use hearth_inference::ModelSlots;
use hearth_inference::{checked_text, ApiError};
use identity::{Kind, LinkHash};
use policy::Policy;
use rules::{Facts, RuleSet};
use state::{Customer, Directory, Message};
use workflows::{Engine, Run};

pub use config::{CountryCode, DeskConfig, LocalConfig};
pub use error::{CaError, DeskError, LocalError, RulesError, SecretError, StoreError};
pub use messages::{Identifiers, MessageAnswer, MessageBody, SessionView, StartedWorkflow};

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The models' answers to one message.
struct Understood {
    intent: Option<hearth_inference::intent::IntentAnswer>,
    emotion: Option<hearth_inference::emotion::EmotionAnswer>,
    recommendations: Option<hearth_inference::recommend::RecommendAnswer>,
    unavailable: std::collections::BTreeMap<String, String>,
}

/// Answer of `GET /v1/customers/{id}/history`: what is stored about a customer, across channels.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct History {
    /// The pseudonymous customer id.
    pub customer_id: String,
    /// Unix seconds of their first message.
    pub first_seen: u64,
    /// Unix seconds of their last message.
    pub last_seen: u64,
    /// How many channel identifiers are linked to them (kept only as keyed hashes).
    pub linked_identifiers: usize,
    /// Their current session; `null` when it has expired.
    pub session: Option<state::Session>,
    /// Their stored messages, oldest first, with only the fields the retention policy keeps.
    pub messages: Vec<Message>,
}

/// Answer of `DELETE /v1/customers/{id}`: what was erased.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Erased {
    /// Always true: the customer is gone, on disk too.
    pub erased: bool,
    /// Messages erased.
    pub messages: usize,
    /// Linked identifiers erased.
    pub linked_identifiers: usize,
    /// Workflow runs about them erased.
    pub workflow_runs: usize,
    /// The erasure's entry in the audit log: a keyed reference, never the customer id.
    #[schema(pattern = "^customer-ref:[0-9a-f]{16}$")]
    pub audit_reference: String,
}

/// The customer-service core of one participant.
#[derive(Debug)]
pub struct Desk {
    keys: Arc<NodeKeys>,
    slots: ModelSlots,
    policy: Policy,
    window_s: u64,
    country_code: Option<String>,
    /// The rules serving now; reloaded by [`Desk::spawn_background`] and the admin endpoint.
    pub rules: RuleSet,
    directory: Mutex<Directory>,
    writer: store::Writer,
    /// Workflow runs.
    pub engine: Arc<Engine>,
    audit: Option<AuditLog>,
    config: DeskConfig,
    /// The institution this desk serves (its participant's id): only callers acting for it get in.
    pub institution: String,
    /// What agents did, and how long customers waited for a first reply.
    agent_metrics: Mutex<agents::AgentMetrics>,
}

fn checked_label(what: &str, v: &str, max: usize) -> Result<String, ApiError> {
    let v = v.trim();
    if v.is_empty() || v.len() > max || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(ApiError::bad(
            "invalid_request",
            format!("{what} must be 1 to {max} letters, digits, '-', '_' or '.'"),
        ));
    }
    Ok(v.to_string())
}

impl Desk {
    /// Opens the service's store in `data_dir` and its rules, for `institution`'s callers. Blocking (reads
    /// and opens every record).
    pub fn open(
        config: &DeskConfig,
        data_dir: &Path,
        institution: &str,
        keys: Arc<NodeKeys>,
        slots: ModelSlots,
        audit: Option<AuditLog>,
    ) -> Result<Self, DeskError> {
        let policy = Policy::from_config(&config.retention);
        let window_s = config.session_window.as_secs();
        let rules_path = config.rules_file.clone().unwrap_or_else(|| data_dir.join("rules.toml"));
        let rules = RuleSet::open(&rules_path)?;
        let (writer, loaded) = store::open::<Customer, Run>(data_dir, &keys)?;
        let mut directory = Directory::default();
        for (row, mut c) in loaded.customers {
            c.row = row.as_slice().try_into().map_err(|_| StoreError::Record {
                what: "customer row",
                id: hex::encode(&row),
                message: "the row key is not 32 bytes".into(),
            })?;
            directory.restore(c);
        }
        let signer = match &config.webhook_secret_file {
            None => None,
            Some(path) => {
                let bad = |reason| DeskError::WebhookSecret { path: path.display().to_string(), reason };
                let secret = zeroize::Zeroizing::new(
                    std::fs::read_to_string(path).map_err(|e| bad(SecretError::Unreadable(e.to_string())))?,
                );
                hearth_node::config::warn_if_readable_by_others(path);
                Some(webhook::Signer::from_secret(&secret).map_err(bad)?)
            }
        };
        let tls = webhook::WebhookTls::load(config.webhook_ca_file.as_deref()).map_err(|reason| {
            let path = config.webhook_ca_file.as_deref().unwrap_or(Path::new(webhook::SYSTEM_CA_BUNDLE));
            DeskError::WebhookCa { path: path.display().to_string(), reason }
        })?;
        let client = webhook::Client { signer, tls };
        let engine =
            Arc::new(Engine::new(Arc::clone(&keys), writer.clone(), audit.clone(), loaded.runs, client));
        Ok(Self {
            keys,
            slots,
            policy,
            window_s,
            country_code: config.default_country_code.as_ref().map(|c| c.as_str().to_string()),
            rules,
            directory: Mutex::new(directory),
            writer,
            engine,
            audit,
            config: config.clone(),
            institution: institution.to_string(),
            agent_metrics: Mutex::new(agents::AgentMetrics::default()),
        })
    }

    fn directory(&self) -> MutexGuard<'_, Directory> {
        // Every critical section leaves the directory consistent before anything that could panic.
        self.directory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many customers are stored.
    pub fn customers(&self) -> usize {
        self.directory().len()
    }

    fn seal_customer(&self, c: &Customer) -> Result<(), ApiError> {
        let json =
            zeroize::Zeroizing::new(serde_json::to_vec(c).map_err(|e| ApiError::Internal(e.to_string()))?);
        let sealed = self
            .keys
            .seal(&store::customer_object(&c.row), &json)
            .map_err(|e| ApiError::Internal(format!("sealing a customer record: {e}")))?;
        self.writer.put_customer(&c.row, sealed).map_err(ApiError::from)
    }

    fn links(&self, ids: &Identifiers) -> Result<Vec<LinkHash>, ApiError> {
        let given = [
            (Kind::Phone, &ids.phone),
            (Kind::Email, &ids.email),
            (Kind::OpenId, &ids.openid),
            (Kind::Device, &ids.device),
        ];
        let mut out = Vec::new();
        for (kind, v) in given {
            if let Some(v) = v {
                let n = identity::normalise(kind, v, self.country_code.as_deref())?;
                out.push(identity::link_hash(&self.keys, kind, &n)?);
            }
        }
        if out.is_empty() {
            return Err(ApiError::bad(
                "no_identifier",
                "identifiers must hold at least one of phone, email, openid, device",
            ));
        }
        Ok(out)
    }

    /// What the served models make of `text`, in process. A family without a model is left out with
    /// the reason; any other failure fails the request.
    fn understand(&self, text: &str) -> Result<Understood, ApiError> {
        let mut unavailable = std::collections::BTreeMap::new();
        let mut absent = |family: &str, e: ApiError| match e {
            ApiError::NoModel(_) => {
                let why = format!("no {family} model has been committed yet on this participant");
                unavailable.insert(family.to_string(), why);
                Ok(())
            }
            other => Err(other),
        };
        let intent = hearth_inference::intent::answer(&self.slots, text, Some(3)).map(Some);
        let intent = intent.or_else(|e| absent("intent", e).map(|()| None))?;
        let emotion = hearth_inference::emotion::answer(&self.slots, text).map(Some);
        let emotion = emotion.or_else(|e| absent("emotion", e).map(|()| None))?;
        let body = hearth_inference::recommend::RecommendBody {
            text: Some(text.to_string()),
            top_k: Some(3),
            ..Default::default()
        };
        let recommendations = hearth_inference::recommend::answer(&self.slots, body).map(Some);
        let recommendations = recommendations.or_else(|e| absent("recommend", e).map(|()| None))?;
        Ok(Understood { intent, emotion, recommendations, unavailable })
    }

    /// Answers one message: attribute it, ask the models, run the rules, store what the policy allows,
    /// start the workflows. Blocking (models, hashing, sealing): call from a blocking thread; `rt`
    /// runs the workflows.
    pub fn message(&self, body: MessageBody, rt: &tokio::runtime::Handle) -> Result<MessageAnswer, ApiError> {
        let channel = body.channel.trim();
        if !rules::CHANNELS.contains(&channel) {
            return Err(ApiError::bad(
                "invalid_channel",
                format!("channel must be one of {}", rules::CHANNELS.join(", ")),
            ));
        }
        let text = checked_text(&body.text)?;
        let tier = body.tier.as_deref().map(|t| checked_label("tier", t, messages::MAX_TIER)).transpose()?;
        let order_id = body
            .order_id
            .as_deref()
            .map(|o| checked_label("order_id", o, messages::MAX_ORDER_ID))
            .transpose()?;
        let links = self.links(&body.identifiers)?;

        let Understood { intent, emotion, recommendations, unavailable } = self.understand(text)?;

        let rules = self.rules.current();
        let facts = Facts {
            intent: intent.as_ref().map(|i| (i.label.as_str(), i.confidence, i.out_of_scope)),
            emotion: emotion.as_ref().map(|e| (e.labels.as_slice(), e.escalate)),
            tier: tier.as_deref(),
            channel,
        };
        let decision = rules.decide(&facts);

        let now = unix_now();
        let p = &self.policy;
        let keep = |field: &str, v: Option<String>| v.filter(|_| p.keep(field));
        let message = Message {
            at: now,
            channel: keep("channel", Some(channel.to_string())),
            text: keep("text", Some(text.to_string())),
            intent: keep("intent", intent.as_ref().map(|i| i.label.clone())),
            emotion: keep("emotion", emotion.as_ref().map(|e| e.label.clone())),
            route: keep("route", Some(enum_name(&decision.route))),
            priority: keep("priority", Some(enum_name(&decision.priority))),
            order_id: keep("order_id", order_id.clone()),
            tier: keep("tier", tier.clone()),
            ..Default::default()
        };
        let (attribution, session, conversation_id) = {
            let mut dir = self.directory();
            let keys = &self.keys;
            let mut row_err = None;
            let new_customer = || {
                let id = identity::new_customer_id();
                let row = identity::customer_ref(keys, &id).unwrap_or_else(|e| {
                    row_err = Some(e);
                    [0; 32]
                });
                (id, row)
            };
            let new_session = || format!("s-{}", hex::encode(rand::random::<[u8; 16]>()));
            let (a, merged_away) =
                dir.attribute(&links, channel, now, self.window_s, new_customer, new_session);
            if let Some(e) = row_err {
                dir.erase(&a.customer);
                return Err(e);
            }
            for m in &merged_away {
                self.writer.delete_customer(&m.row)?;
            }
            dir.push_message(&a.customer, message, p.max_messages)
                .ok_or_else(|| ApiError::Internal("the attributed customer vanished".into()))?;
            let c = dir
                .get_mut(&a.customer)
                .ok_or_else(|| ApiError::Internal("the attributed customer vanished".into()))?;
            let recommended = recommendations
                .as_ref()
                .map(|r| r.items.iter().map(|i| i.item.clone()).collect())
                .unwrap_or_default();
            let conversation =
                agents::on_message(c, decision.route, decision.priority, channel, recommended, now);
            self.seal_customer(c)?;
            let session = c.session.clone();
            (a, session, conversation)
        };
        let session = session.ok_or_else(|| ApiError::Internal("no session after attribution".into()))?;
        if !attribution.merged.is_empty() {
            self.engine.reassign(&attribution.merged, &attribution.customer)?;
        }

        let mut started = Vec::new();
        for w in &decision.workflows {
            let Some(steps) = rules.workflows.get(w) else { continue };
            let context = serde_json::json!({
                "order_id": order_id,
                "channel": channel,
                "intent": intent.as_ref().map(|i| i.label.clone()),
                "emotion": emotion.as_ref().map(|e| e.label.clone()),
                "priority": decision.priority,
                "route": decision.route,
            });
            let run_id = self.engine.start(w, steps.clone(), &attribution.customer, context, rt)?;
            started.push(StartedWorkflow { workflow: w.clone(), run_id });
        }
        Ok(MessageAnswer {
            customer_id: attribution.customer,
            new_customer: attribution.new_customer,
            merged_customers: attribution.merged,
            session: SessionView {
                id: session.id,
                continued: attribution.continued,
                channels: session.channels,
                messages: session.messages,
            },
            intent,
            emotion,
            recommendations,
            unavailable,
            priority: decision.priority,
            route: decision.route,
            conversation_id,
            replies: decision.replies,
            rules_fired: decision.fired,
            workflows: started,
            stored: p.kept().into_iter().map(str::to_string).collect(),
        })
    }

    /// A customer's linked history across channels: sessions and the stored fields of each message.
    pub fn history(&self, id: &str) -> Result<History, ApiError> {
        let id = identity::checked_customer_id(id)?;
        let dir = self.directory();
        let c = dir.get(id).ok_or_else(unknown_customer)?;
        Ok(History {
            customer_id: c.id.clone(),
            first_seen: c.created,
            last_seen: c.last_seen,
            linked_identifiers: c.links.len(),
            session: c.session.clone(),
            messages: c.messages.iter().cloned().collect(),
        })
    }

    /// Erases a customer everywhere: their record (links, sessions, messages) and every workflow run
    /// about them; waits until that is on disk, compacts the file, and records the erasure in the audit
    /// log under a keyed reference (never the id itself, so the log does not keep what was erased).
    pub async fn erase(&self, id: &str, actor: &str) -> Result<Erased, ApiError> {
        let id = identity::checked_customer_id(id)?;
        let c = self.directory().erase(id).ok_or_else(unknown_customer)?;
        let runs = self.engine.erase_customer(id)?;
        self.writer.delete_customer(&c.row)?;
        self.writer.compact()?;
        self.writer.flush().await?;
        let reference = format!("customer-ref:{}", hex::encode(&c.row[..8]));
        if let Some(log) = &self.audit {
            log.record_event(
                Event::new(actor, Action::CustomerErase, Outcome::Ok).object(reference.clone()).detail(
                    format!(
                        "erased {} messages, {} links, {} workflow runs",
                        c.messages.len(),
                        c.links.len(),
                        runs
                    ),
                ),
            );
        }
        Ok(Erased {
            erased: true,
            messages: c.messages.len(),
            linked_identifiers: c.links.len(),
            workflow_runs: runs,
            audit_reference: reference,
        })
    }

    /// One pass of the retention job: strips expired fields, erases inactive customers, removes old
    /// finished workflow runs. Blocking (sealing).
    pub fn sweep(&self, now: u64) -> Result<(usize, usize), ApiError> {
        let erased = {
            let mut dir = self.directory();
            let (changed, erased) = dir.sweep(&self.policy, now);
            for id in &changed {
                if let Some(c) = dir.get(id) {
                    self.seal_customer(c)?;
                }
            }
            for c in &erased {
                self.writer.delete_customer(&c.row)?;
            }
            erased
        };
        for c in &erased {
            self.engine.erase_customer(&c.id)?;
        }
        let runs = self.engine.sweep(self.policy.workflow, now)?;
        if !erased.is_empty() || runs > 0 {
            if let Some(log) = &self.audit {
                log.record_event(Event::new("system", Action::RetentionPurge, Outcome::Ok).detail(format!(
                    "{} inactive customers erased, {runs} finished workflow runs removed",
                    erased.len()
                )));
            }
        }
        Ok((erased.len(), runs))
    }

    /// Reloads the rules file now (the admin endpoint); audited either way.
    pub fn reload_rules(&self, actor: &str) -> Result<usize, RulesError> {
        let r = self.rules.reload();
        self.audit_reload(actor, &r);
        r.map(|rules| rules.len())
    }

    fn audit_reload(&self, actor: &str, r: &Result<Arc<rules::Rules>, RulesError>) {
        let (outcome, detail) = match r {
            Ok(rules) => (Outcome::Ok, format!("{} rules from {}", rules.len(), self.rules.path().display())),
            Err(e) => (Outcome::Refused, e.to_string()),
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "rules file refused; the previous rules keep serving");
        }
        if let Some(log) = &self.audit {
            log.record_event(Event::new(actor, Action::RulesReload, outcome).detail(detail));
        }
    }

    /// Starts the background tasks: resuming unfinished workflow runs, polling the rules file, and
    /// the retention job.
    pub fn spawn_background(self: &Arc<Self>) {
        let n = self.engine.resume();
        if n > 0 {
            tracing::info!(runs = n, "resumed unfinished workflow runs");
        }
        let poll = self.config.rules_poll;
        let me = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(poll).await;
                let s = Arc::clone(&me);
                let _ = tokio::task::spawn_blocking(move || {
                    if let Some(r) = s.rules.reload_if_changed() {
                        s.audit_reload("system", &r);
                    }
                })
                .await;
            }
        });
        let every = self.config.retention_sweep;
        let me = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let s = Arc::clone(&me);
                match tokio::task::spawn_blocking(move || s.sweep(unix_now())).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(error = ?e, "retention job failed"),
                    Err(e) => tracing::error!(error = %e, "retention job panicked"),
                }
            }
        });
    }
}

fn unknown_customer() -> ApiError {
    ApiError::NotFound {
        reason: "unknown_customer",
        message: "no customer with this id here (never seen, erased, merged into another, or expired)".into(),
    }
}

/// The serde name of a unit enum variant (`senior`, `urgent`).
fn enum_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

#[cfg(test)]
mod tests;

//! Contact-centre agents: the queues routed conversations wait in, and what an agent does with one.
//!
//! A message the rules route to `human` or `senior` opens a conversation for its customer in that queue,
//! at the message's priority. A customer has at most one open conversation: their later messages join
//! it (a waiting one moves up to a higher priority, and from `human` to `senior` when so routed), and
//! it remembers the channel they used last. Agents (certificate role `agent`, acting for this
//! institution) work the queues:
//!
//! - **list** them: how many wait in each, by priority, and the oldest wait; then the waiting
//!   conversations in the order they will be claimed (highest priority first, then longest waiting);
//! - **claim** the next one (of one queue or either): it is theirs alone until they transfer or close it;
//! - **see** its context, only what the retention policy keeps: the session's stored messages (the
//!   customer's and the agents' replies), the last intent and emotion, the recommended items. Never the
//!   customer id or any identifier;
//! - **reply**: the text is delivered through the channel the customer used last, by that channel's
//!   webhook in the rules file (`[replies]`), as a one-step workflow run (retries, signing, dead letters
//!   as for any step), and kept in the session like a message;
//! - **transfer** it to a queue (at a priority): it waits again, keeping its place by when it first
//!   queued;
//! - **close** it.
//!
//! Claims are made under the directory's lock, so two agents of one desk never hold the same
//! conversation. Every action is audited (`service.call`, with the conversation id, never the customer),
//! and so is every refusal of one on a conversation the agent does not hold (`denied`). The queues are
//! found by a scan of the customers in memory (fine for tens of thousands; an index would serve more).

use std::cmp::Reverse;
use std::collections::BTreeMap;

use hearth_audit::{Action, Event, Outcome};
use hearth_inference::{checked_text, ApiError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::rules::{Priority, Route};
use crate::state::{Customer, Directory, Message};
use crate::{unix_now, Desk};

/// The queues, by route.
pub const QUEUES: [&str; 2] = ["human", "senior"];
/// Most waiting conversations one listing shows.
const MAX_LISTED: usize = 100;
/// The bounds of the time-to-first-reply histogram, seconds.
pub const FIRST_REPLY_BOUNDS: [f64; 10] =
    [5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0];

/// Where a conversation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    /// In a queue.
    Waiting,
    /// Held by an agent.
    Claimed,
    /// Ended by an agent.
    Closed,
}

/// A customer's conversation with the agents, kept in (and sealed with) their record, so that erasure
/// and retention take it with them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Conversation {
    /// `v-` and 32 hex digits, random.
    pub id: String,
    /// The customer's session it is in now (the latest one a message joined it from).
    pub session: String,
    /// `human` or `senior`.
    pub queue: String,
    /// How urgent.
    pub priority: Priority,
    /// Where it is.
    pub status: ConversationStatus,
    /// The agent holding it (or who closed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Unix seconds it first queued.
    pub enqueued_at: u64,
    /// Unix seconds it was last claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<u64>,
    /// Unix seconds of the first reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_reply_at: Option<u64>,
    /// Unix seconds it was closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<u64>,
    /// The channel the customer used last: replies go there.
    pub channel: String,
    /// The items recommended on the customer's last message that had any.
    #[serde(default)]
    pub recommended: Vec<String>,
}

impl Conversation {
    /// Waiting or claimed.
    pub fn is_open(&self) -> bool {
        self.status != ConversationStatus::Closed
    }

    /// Claim order: highest priority first, then longest waiting.
    fn order(&self) -> (Reverse<Priority>, u64, &str) {
        (Reverse(self.priority), self.enqueued_at, &self.id)
    }
}

/// Opens or updates `c`'s conversation after a message routed `route` at `priority` on `channel`;
/// returns its id when it is open.
pub(crate) fn on_message(
    c: &mut Customer,
    route: Route,
    priority: Priority,
    channel: &str,
    recommended: Vec<String>,
    now: u64,
) -> Option<String> {
    let queue = match route {
        Route::Human => Some("human"),
        Route::Senior => Some("senior"),
        Route::Bot | Route::SelfService => None,
    };
    match c.conversation.as_mut().filter(|v| v.is_open()) {
        Some(v) => {
            v.channel = channel.to_string();
            // A customer writing after the session window joins the same conversation in a new session.
            if let Some(session) = &c.session {
                v.session = session.id.clone();
            }
            if !recommended.is_empty() {
                v.recommended = recommended;
            }
            if v.status == ConversationStatus::Waiting {
                v.priority = v.priority.max(priority);
                if queue == Some("senior") {
                    v.queue = "senior".into();
                }
            }
            Some(v.id.clone())
        }
        None => {
            let queue = queue?;
            let session = c.session.as_ref()?.id.clone();
            let id = format!("v-{}", hex::encode(rand::random::<[u8; 16]>()));
            c.conversation = Some(Conversation {
                id: id.clone(),
                session,
                queue: queue.into(),
                priority,
                status: ConversationStatus::Waiting,
                agent: None,
                enqueued_at: now,
                claimed_at: None,
                first_reply_at: None,
                closed_at: None,
                channel: channel.to_string(),
                recommended,
            });
            Some(id)
        }
    }
}

/// One queue's state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueState {
    /// `human` or `senior`.
    pub queue: String,
    /// Conversations waiting.
    pub waiting: usize,
    /// Of them, how many at each priority (`low`, `normal`, `high`, `urgent`).
    pub by_priority: BTreeMap<String, usize>,
    /// Seconds the longest-waiting one has waited; 0 when none waits.
    pub oldest_wait_s: u64,
    /// Conversations agents hold.
    pub claimed: usize,
}

/// A waiting conversation, as listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WaitingConversation {
    /// Its id.
    #[schema(pattern = "^v-[0-9a-f]{32}$")]
    pub conversation_id: String,
    /// Its queue.
    pub queue: String,
    /// Its priority.
    pub priority: Priority,
    /// Seconds since it first queued.
    pub waiting_s: u64,
    /// The channel the customer used last.
    pub channel: String,
}

/// Answer of `GET /v1/agent/queues`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Queues {
    /// Each queue.
    pub queues: Vec<QueueState>,
    /// The waiting conversations in claim order (at most 100).
    pub waiting: Vec<WaitingConversation>,
    /// The conversations the calling agent holds.
    pub mine: Vec<String>,
}

/// What an agent sees of a conversation: what the retention policy keeps, never who the customer is.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConversationView {
    /// The conversation.
    pub conversation: Conversation,
    /// The customer's last stored intent, if the policy keeps intents.
    pub intent: Option<String>,
    /// The customer's last stored emotion, if the policy keeps emotions.
    pub emotion: Option<String>,
    /// The stored messages of the session and since the conversation queued, oldest first: the
    /// customer's and the agents' replies (`by_agent`), each with only the fields the policy keeps.
    pub messages: Vec<Message>,
}

/// Body of `POST /v1/agent/claim`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    /// `human` or `senior`; either when absent.
    #[serde(default)]
    #[schema(pattern = "^(human|senior)$")]
    pub queue: Option<String>,
}

impl hearth_inference::Body for ClaimBody {
    const FIELDS: &'static [&'static str] = &["queue"];
}

/// Body of `POST /v1/agent/conversations/{id}/reply`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyBody {
    /// What to tell the customer: 1 to 10,000 characters, not blank.
    #[schema(schema_with = hearth_inference::text::text_schema)]
    pub text: String,
}

impl hearth_inference::Body for ReplyBody {
    const FIELDS: &'static [&'static str] = &["text"];
}

/// Answer of `POST /v1/agent/conversations/{id}/reply`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Replied {
    /// The conversation.
    pub conversation_id: String,
    /// The channel it goes through (the customer's last).
    pub channel: String,
    /// The delivery's workflow run (`GET /v1/admin/workflows/{id}`; a failed one is a dead letter).
    pub run_id: String,
}

/// Body of `POST /v1/agent/conversations/{id}/transfer`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    /// The queue it goes to: `human` or `senior`.
    #[schema(pattern = "^(human|senior)$")]
    pub queue: String,
    /// Its priority there; unchanged when absent.
    #[serde(default)]
    pub priority: Option<Priority>,
}

impl hearth_inference::Body for TransferBody {
    const FIELDS: &'static [&'static str] = &["queue", "priority"];
}

/// What agents did since the desk started, and how long customers waited for a first reply.
#[derive(Debug)]
pub struct AgentMetrics {
    /// Seconds from queueing to the first reply.
    pub first_reply: hearth_transport::ops::Histogram,
    /// Claims, replies, transfers and closes.
    pub actions: BTreeMap<&'static str, u64>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self {
            first_reply: hearth_transport::ops::Histogram::new(&FIRST_REPLY_BOUNDS),
            actions: BTreeMap::new(),
        }
    }
}

fn checked_queue(q: &str) -> Result<&'static str, ApiError> {
    QUEUES
        .iter()
        .find(|k| **k == q)
        .copied()
        .ok_or_else(|| ApiError::bad("unknown_queue", format!("queue must be one of {}", QUEUES.join(", "))))
}

fn checked_conversation_id(id: &str) -> Result<&str, ApiError> {
    crate::identity::checked_random_id(
        id,
        "v-",
        "invalid_conversation_id",
        "a conversation id is `v-` and 32 lower-case hex digits",
    )
}

fn unknown_conversation() -> ApiError {
    ApiError::NotFound {
        reason: "unknown_conversation",
        message: "no conversation with this id (never opened, erased with its customer, or expired)".into(),
    }
}

/// The customer whose conversation is `id`, held by `agent`.
fn held<'a>(dir: &'a mut Directory, agent: &str, id: &str) -> Result<&'a mut Customer, ApiError> {
    let customer = dir
        .values()
        .find(|c| c.conversation.as_ref().is_some_and(|v| v.id == id))
        .map(|c| c.id.clone())
        .ok_or_else(unknown_conversation)?;
    let c = dir.get_mut(&customer).ok_or_else(unknown_conversation)?;
    let v = c.conversation.as_ref().ok_or_else(unknown_conversation)?;
    if v.status != ConversationStatus::Claimed || v.agent.as_deref() != Some(agent) {
        let state = match (v.status, &v.agent) {
            (ConversationStatus::Waiting, _) => "it is waiting in a queue: claim it first".to_string(),
            (ConversationStatus::Closed, _) => "it is closed".to_string(),
            (ConversationStatus::Claimed, Some(other)) => format!("{other} holds it"),
            (ConversationStatus::Claimed, None) => "no agent holds it".to_string(),
        };
        return Err(ApiError::Conflict {
            reason: "not_yours",
            message: format!("conversation {id}: {state}"),
        });
    }
    Ok(c)
}

/// What `agent` sees of `c`'s conversation.
fn view(c: &Customer) -> Option<ConversationView> {
    let v = c.conversation.clone()?;
    // The messages since it queued (across sessions, when the customer came back after the window),
    // and the earlier ones of the session it started in.
    let messages: Vec<Message> =
        c.messages.iter().filter(|m| m.at >= v.enqueued_at || m.session == v.session).cloned().collect();
    let theirs = || c.messages.iter().rev().filter(|m| m.by_agent.is_none());
    let intent = theirs().find_map(|m| m.intent.clone());
    let emotion = theirs().find_map(|m| m.emotion.clone());
    Some(ConversationView { conversation: v, intent, emotion, messages })
}

impl Desk {
    fn agent_audit(&self, agent: &str, detail: String) {
        if let Some(log) = &self.audit {
            log.record_event(Event::new(agent.to_string(), Action::ServiceCall, Outcome::Ok).detail(detail));
        }
    }

    /// Records a refused agent action (another agent's conversation, one not claimed) as denied.
    fn refused<T>(&self, agent: &str, what: &str, r: Result<T, ApiError>) -> Result<T, ApiError> {
        if let (Err(e), Some(log)) = (&r, &self.audit) {
            if e.reason() == "not_yours" {
                let detail = format!("{what}: {}", e.message());
                log.record_event(
                    Event::new(agent.to_string(), Action::ServiceCall, Outcome::Denied).detail(detail),
                );
            }
        }
        r
    }

    fn count(&self, action: &'static str) {
        *self.agent_metrics().actions.entry(action).or_default() += 1;
    }

    fn agent_metrics(&self) -> std::sync::MutexGuard<'_, AgentMetrics> {
        self.agent_metrics.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The queues as `agent` sees them.
    pub fn queues(&self, agent: &str) -> Queues {
        self.survey(agent, MAX_LISTED)
    }

    /// The queues' states, `agent`'s conversations and the first `listed` waiting ones in claim order
    /// (none, and no sorting, for the metrics).
    fn survey(&self, agent: &str, listed: usize) -> Queues {
        let now = unix_now();
        let dir = self.directory();
        let mut waiting: Vec<&Conversation> = Vec::new();
        let mut states: Vec<QueueState> = QUEUES
            .iter()
            .map(|q| QueueState {
                queue: q.to_string(),
                waiting: 0,
                by_priority: BTreeMap::new(),
                oldest_wait_s: 0,
                claimed: 0,
            })
            .collect();
        let mut mine = Vec::new();
        for v in dir.values().filter_map(|c| c.conversation.as_ref()) {
            let Some(state) = states.iter_mut().find(|s| s.queue == v.queue) else { continue };
            match v.status {
                ConversationStatus::Waiting => {
                    state.waiting += 1;
                    *state.by_priority.entry(crate::enum_name(&v.priority)).or_default() += 1;
                    state.oldest_wait_s = state.oldest_wait_s.max(now.saturating_sub(v.enqueued_at));
                    waiting.push(v);
                }
                ConversationStatus::Claimed => {
                    state.claimed += 1;
                    if v.agent.as_deref() == Some(agent) {
                        mine.push(v.id.clone());
                    }
                }
                ConversationStatus::Closed => {}
            }
        }
        if listed == 0 {
            waiting.clear();
        }
        waiting.sort_by(|a, b| a.order().cmp(&b.order()));
        let waiting = waiting
            .into_iter()
            .take(listed)
            .map(|v| WaitingConversation {
                conversation_id: v.id.clone(),
                queue: v.queue.clone(),
                priority: v.priority,
                waiting_s: now.saturating_sub(v.enqueued_at),
                channel: v.channel.clone(),
            })
            .collect();
        mine.sort();
        Queues { queues: states, waiting, mine }
    }

    /// Claims the next waiting conversation of `queue` (either when `None`) for `agent`.
    pub fn claim(&self, agent: &str, queue: Option<&str>) -> Result<ConversationView, ApiError> {
        let queue = queue.map(checked_queue).transpose()?;
        let now = unix_now();
        let view = {
            let mut dir = self.directory();
            let next = dir
                .values()
                .filter_map(|c| c.conversation.as_ref().map(|v| (c, v)))
                .filter(|(_, v)| {
                    v.status == ConversationStatus::Waiting && queue.is_none_or(|q| v.queue == q)
                })
                .min_by(|(_, a), (_, b)| a.order().cmp(&b.order()))
                .map(|(c, _)| c.id.clone());
            let Some(customer) = next else {
                let which = queue.map_or("either queue".to_string(), |q| format!("the {q} queue"));
                return Err(ApiError::Conflict {
                    reason: "queue_empty",
                    message: format!("no conversation is waiting in {which}"),
                });
            };
            let c = dir.get_mut(&customer).ok_or_else(unknown_conversation)?;
            if let Some(v) = c.conversation.as_mut() {
                v.status = ConversationStatus::Claimed;
                v.agent = Some(agent.to_string());
                v.claimed_at = Some(now);
            }
            self.seal_customer(c)?;
            view(c).ok_or_else(unknown_conversation)?
        };
        self.count("claim");
        self.agent_audit(agent, format!("claimed conversation {}", view.conversation.id));
        Ok(view)
    }

    /// The conversation `id`, which `agent` must hold.
    pub fn conversation(&self, agent: &str, id: &str) -> Result<ConversationView, ApiError> {
        let id = checked_conversation_id(id)?;
        let view = {
            let mut dir = self.directory();
            let c = self.refused(agent, "read", held(&mut dir, agent, id))?;
            view(c).ok_or_else(unknown_conversation)?
        };
        self.agent_audit(agent, format!("read conversation {id}"));
        Ok(view)
    }

    /// `agent`'s reply on conversation `id`: kept in the session and delivered through the channel the
    /// customer used last. Blocking (sealing); `rt` runs the delivery.
    pub fn reply(
        &self,
        agent: &str,
        id: &str,
        text: &str,
        rt: &tokio::runtime::Handle,
    ) -> Result<Replied, ApiError> {
        let id = checked_conversation_id(id)?;
        let text = checked_text(text)?;
        let rules = self.rules.current();
        let now = unix_now();
        let (customer, channel, step, waited) = {
            let mut dir = self.directory();
            let c = self.refused(agent, "reply", held(&mut dir, agent, id))?;
            let v = c.conversation.as_mut().ok_or_else(unknown_conversation)?;
            let channel = v.channel.clone();
            let step = rules.replies.get(&channel).cloned().ok_or_else(|| ApiError::Conflict {
                reason: "no_reply_route",
                message: format!(
                    "the rules file has no [replies] entry for channel {channel}, so a reply cannot reach the \
                     customer there; an admin adds one (see README, Agents)"
                ),
            })?;
            let waited = v.first_reply_at.is_none().then(|| now.saturating_sub(v.enqueued_at));
            v.first_reply_at.get_or_insert(now);
            let p = &self.policy;
            let message = Message {
                at: now,
                channel: Some(channel.clone()).filter(|_| p.keep("channel")),
                text: Some(text.to_string()).filter(|_| p.keep("text")),
                by_agent: Some(agent.to_string()),
                ..Default::default()
            };
            let customer = c.id.clone();
            let c = dir
                .push_message(&customer, message, p.max_messages)
                .ok_or_else(|| ApiError::Internal("the conversation's customer vanished".into()))?;
            self.seal_customer(c)?;
            (customer, channel, step, waited)
        };
        let context = serde_json::json!({
            "conversation_id": id,
            "channel": channel,
            "agent": agent,
            "text": text,
        });
        let run_id = self.engine.start("reply", vec![step], &customer, context, rt)?;
        {
            let mut m = self.agent_metrics();
            if let Some(w) = waited {
                m.first_reply.observe(w as f64);
            }
            *m.actions.entry("reply").or_default() += 1;
        }
        self.agent_audit(agent, format!("replied on conversation {id} through {channel} (run {run_id})"));
        Ok(Replied { conversation_id: id.to_string(), channel, run_id })
    }

    /// Changes conversation `id`, which `agent` must hold, with `change`; seals it, counts and audits
    /// `action` (with `detail`), and returns what the agent sees of it after.
    fn act(
        &self,
        agent: &str,
        id: &str,
        action: &'static str,
        detail: String,
        change: impl FnOnce(&mut Conversation),
    ) -> Result<ConversationView, ApiError> {
        let view = {
            let mut dir = self.directory();
            let c = self.refused(agent, action, held(&mut dir, agent, id))?;
            if let Some(v) = c.conversation.as_mut() {
                change(v);
            }
            self.seal_customer(c)?;
            view(c).ok_or_else(unknown_conversation)?
        };
        self.count(action);
        self.agent_audit(agent, detail);
        Ok(view)
    }

    /// Puts conversation `id`, held by `agent`, back in `queue` (at `priority`, if given).
    pub fn transfer(
        &self,
        agent: &str,
        id: &str,
        queue: &str,
        priority: Option<Priority>,
    ) -> Result<ConversationView, ApiError> {
        let id = checked_conversation_id(id)?;
        let queue = checked_queue(queue)?;
        self.act(agent, id, "transfer", format!("transferred conversation {id} to {queue}"), |v| {
            v.status = ConversationStatus::Waiting;
            v.agent = None;
            v.queue = queue.to_string();
            v.priority = priority.unwrap_or(v.priority);
        })
    }

    /// Closes conversation `id`, held by `agent`.
    pub fn close(&self, agent: &str, id: &str) -> Result<ConversationView, ApiError> {
        let id = checked_conversation_id(id)?;
        self.act(agent, id, "close", format!("closed conversation {id}"), |v| {
            v.status = ConversationStatus::Closed;
            v.closed_at = Some(unix_now());
            // What served the agent while it was open is not kept past it.
            v.recommended.clear();
        })
    }

    /// The queues' and agents' metrics: conversations waiting per queue and priority, the oldest wait,
    /// conversations held, agents' actions, and the time to a first reply.
    pub fn render_agent_metrics(&self, m: &mut hearth_transport::ops::MetricsText) {
        let q = self.survey("", 0);
        for s in &q.queues {
            for p in ["low", "normal", "high", "urgent"] {
                m.gauge(
                    "hearth_desk_queue_waiting",
                    "Conversations waiting for an agent, per queue and priority.",
                    &[("queue", &s.queue), ("priority", p)],
                    s.by_priority.get(p).copied().unwrap_or(0) as f64,
                );
            }
            m.gauge(
                "hearth_desk_queue_oldest_wait_seconds",
                "How long the longest-waiting conversation of the queue has waited.",
                &[("queue", &s.queue)],
                s.oldest_wait_s as f64,
            );
            m.gauge(
                "hearth_desk_conversations_claimed",
                "Conversations agents hold, per queue.",
                &[("queue", &s.queue)],
                s.claimed as f64,
            );
        }
        let metrics = self.agent_metrics();
        for action in ["claim", "reply", "transfer", "close"] {
            m.counter(
                "hearth_desk_agent_actions_total",
                "Agents' actions on conversations since the participant started.",
                &[("action", action)],
                metrics.actions.get(action).copied().unwrap_or(0) as f64,
            );
        }
        m.histogram_of(
            "hearth_desk_first_reply_seconds",
            "Seconds from a conversation queueing to an agent's first reply.",
            &[],
            &metrics.first_reply,
        );
    }
}

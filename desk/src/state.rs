//! Customers, their links and sessions, in memory: the rules that decide who wrote and which session a
//! message continues. Pure values (no keys, no files): `lib.rs` hashes the identifiers before and
//! seals and persists the changed records after.
//!
//! Linking rules:
//! 1. Every identifier a message carries is linked to the one customer the message is attributed to.
//! 2. A message whose identifiers are all unknown makes a new customer with a fresh random id.
//! 3. Any shared identifier links: when a message's identifiers point at several customers, they are
//!    one person, and are merged into the oldest (earliest created, in creation order). The others'
//!    links, messages and sessions move to it and their ids stop existing (the answer lists them in
//!    `merged_customers`). A shared household phone therefore merges its users: an app that knows this
//!    should leave such an identifier out.
//! 4. A message within the session window (`session_window`) of the customer's last message continues
//!    that session, whichever channel it came through; later, a new session starts.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::identity::LinkHash;
use super::policy::Policy;

/// Most identifiers linked to one customer; beyond it, the oldest links are dropped.
pub const MAX_LINKS: usize = 64;

/// A customer's current session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Session {
    /// `s-` and 32 hex digits, random.
    pub id: String,
    /// Unix seconds of its first message.
    pub started: u64,
    /// Unix seconds of its last message.
    pub last_at: u64,
    /// The channels it went through, in first-use order.
    pub channels: Vec<String>,
    /// Its messages so far.
    pub messages: u32,
}

/// One stored message: only the fields the policy lets through, each dropped when its period ends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Message {
    /// Its number for this customer.
    pub seq: u64,
    /// Unix seconds it arrived.
    pub at: u64,
    /// The session it belongs to.
    pub session: String,
    /// The policy's fields; `None` when not stored or expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub intent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub emotion: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub route: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub priority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub order_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub tier: Option<String>,
    /// Set on an agent's reply to the customer: the agent (`agent:<id>@<institution>`); its text and
    /// channel are kept as the policy keeps a customer's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_agent: Option<String>,
}

impl Message {
    /// The policy's fields, by name.
    fn fields_mut(&mut self) -> [(&'static str, &mut Option<String>); 8] {
        [
            ("text", &mut self.text),
            ("channel", &mut self.channel),
            ("intent", &mut self.intent),
            ("emotion", &mut self.emotion),
            ("route", &mut self.route),
            ("priority", &mut self.priority),
            ("order_id", &mut self.order_id),
            ("tier", &mut self.tier),
        ]
    }

    /// Drops every field the policy does not keep (at the door) or that expired by `now`; returns
    /// whether anything was dropped.
    pub fn minimise(&mut self, policy: &Policy, now: u64) -> bool {
        let at = self.at;
        let mut changed = false;
        for (name, v) in self.fields_mut() {
            if v.is_some() && policy.expired(name, at, now) {
                *v = None;
                changed = true;
            }
        }
        changed
    }

    /// Whether no field is left.
    pub fn is_empty(&mut self) -> bool {
        self.fields_mut().iter().all(|(_, v)| v.is_none())
    }
}

/// A customer: a pseudonymous id, the keyed hashes of their identifiers, their sessions and messages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Customer {
    /// `c-` and 32 hex digits.
    pub id: String,
    /// The keyed hashes linked to them (hex).
    pub links: Vec<String>,
    /// Unix seconds they first wrote.
    pub created: u64,
    /// Creation order on this node (ties within a second are common): the oldest of a merge is the
    /// smallest `(created, order)`.
    #[serde(default)]
    pub order: u64,
    /// Unix seconds they last wrote.
    pub last_seen: u64,
    /// The current (or last) session.
    pub session: Option<Session>,
    /// Their stored messages, oldest first.
    pub messages: VecDeque<Message>,
    /// The next message number.
    pub next_seq: u64,
    /// Their conversation with the agents: waiting in a queue, held by an agent, or the last one closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<crate::agents::Conversation>,
    /// The key their record is stored under (the keyed hash of `id`); not part of the record.
    #[serde(skip)]
    pub row: LinkHash,
}

/// Who a message is from and which session it continues.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribution {
    /// The customer.
    pub customer: String,
    /// Whether the customer is new.
    pub new_customer: bool,
    /// Customers merged into this one (their ids no longer exist).
    pub merged: Vec<String>,
    /// Whether the session was continued (rather than started).
    pub continued: bool,
}

/// Every customer, and which customer each link points at.
#[derive(Debug, Default)]
pub struct Directory {
    links: HashMap<LinkHash, String>,
    customers: HashMap<String, Customer>,
    /// The next customer's `order`.
    next_order: u64,
}

fn from_hex(h: &str) -> Option<LinkHash> {
    hex::decode(h).ok().and_then(|b| b.try_into().ok())
}

impl Directory {
    /// Adds a customer read from the store.
    pub fn restore(&mut self, c: Customer) {
        self.next_order = self.next_order.max(c.order + 1);
        for l in c.links.iter().filter_map(|h| from_hex(h)) {
            self.links.insert(l, c.id.clone());
        }
        self.customers.insert(c.id.clone(), c);
    }

    /// A customer by id.
    pub fn get(&self, id: &str) -> Option<&Customer> {
        self.customers.get(id)
    }

    /// A customer by id, to change (the caller seals the changed record).
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Customer> {
        self.customers.get_mut(id)
    }

    /// Every customer.
    pub fn values(&self) -> impl Iterator<Item = &Customer> {
        self.customers.values()
    }

    /// How many customers there are.
    pub fn len(&self) -> usize {
        self.customers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.customers.is_empty()
    }

    /// The ids of every customer.
    pub fn ids(&self) -> Vec<String> {
        self.customers.keys().cloned().collect()
    }

    /// Attributes a message with `links` at `now` (rules 1 to 4 of the module doc). `new_id` makes the
    /// ids of a new customer (with its row key) and of a new session. Returns the attribution and the
    /// customers merged away, whose stored rows the caller deletes.
    pub fn attribute(
        &mut self,
        links: &[LinkHash],
        channel: &str,
        now: u64,
        window_s: u64,
        new_customer: impl FnOnce() -> (String, LinkHash),
        new_session: impl FnOnce() -> String,
    ) -> (Attribution, Vec<Customer>) {
        let mut owners: Vec<String> = links.iter().filter_map(|l| self.links.get(l).cloned()).collect();
        owners.sort();
        owners.dedup();
        let (target, new) = if owners.is_empty() {
            let (id, row) = new_customer();
            let c = Customer {
                id: id.clone(),
                links: Vec::new(),
                created: now,
                order: self.next_order,
                last_seen: now,
                session: None,
                messages: VecDeque::new(),
                next_seq: 0,
                conversation: None,
                row,
            };
            self.next_order += 1;
            self.customers.insert(id.clone(), c);
            (id, true)
        } else {
            let oldest = owners
                .iter()
                .filter_map(|o| self.customers.get(o))
                .min_by_key(|c| (c.created, c.order))
                .map(|c| c.id.clone())
                .unwrap_or_else(|| owners[0].clone());
            (oldest, false)
        };
        let mut merged_away = Vec::new();
        for other in owners.iter().filter(|o| **o != target) {
            if let Some(c) = self.customers.remove(other) {
                merged_away.push(c);
            }
        }
        // The entry exists: inserted above or found through a link (links and customers change together).
        let Some(mut c) = self.customers.remove(&target) else {
            return (
                Attribution { customer: target, new_customer: new, merged: vec![], continued: false },
                merged_away,
            );
        };
        for m in &merged_away {
            c.links.extend(m.links.iter().cloned());
            c.messages.extend(m.messages.iter().cloned());
            c.created = c.created.min(m.created);
            let later = match (&c.session, &m.session) {
                (Some(a), Some(b)) => b.last_at > a.last_at,
                (None, Some(_)) => true,
                _ => false,
            };
            if later {
                c.session = m.session.clone();
            }
            // An open conversation of a customer merged away carries on, unless this one has its own.
            let open = |v: &Option<crate::agents::Conversation>| v.as_ref().is_some_and(|v| v.is_open());
            if !open(&c.conversation) && open(&m.conversation) {
                c.conversation = m.conversation.clone();
            }
        }
        if !merged_away.is_empty() {
            c.messages.make_contiguous().sort_by_key(|m| m.at);
            for (i, m) in c.messages.iter_mut().enumerate() {
                m.seq = i as u64;
            }
            c.next_seq = c.messages.len() as u64;
        }
        for l in links {
            let h = hex::encode(l);
            if !c.links.contains(&h) {
                c.links.push(h);
            }
        }
        c.links.sort();
        c.links.dedup();
        if c.links.len() > MAX_LINKS {
            let excess = c.links.len() - MAX_LINKS;
            for h in c.links.drain(..excess) {
                if let Some(l) = from_hex(&h) {
                    self.links.remove(&l);
                }
            }
        }
        for l in c.links.iter().filter_map(|h| from_hex(h)) {
            self.links.insert(l, c.id.clone());
        }
        let continued = c.session.as_ref().is_some_and(|s| now.saturating_sub(s.last_at) <= window_s);
        if continued {
            if let Some(s) = c.session.as_mut() {
                s.last_at = now;
                s.messages += 1;
                if !s.channels.iter().any(|x| x == channel) {
                    s.channels.push(channel.to_string());
                }
            }
        } else {
            c.session = Some(Session {
                id: new_session(),
                started: now,
                last_at: now,
                channels: vec![channel.to_string()],
                messages: 1,
            });
        }
        c.last_seen = now;
        let merged = merged_away.iter().map(|m| m.id.clone()).collect();
        self.customers.insert(target.clone(), c);
        (Attribution { customer: target, new_customer: new, merged, continued }, merged_away)
    }

    /// Appends a message (already minimised) to `id`, dropping the oldest beyond `max`; returns the
    /// customer for sealing.
    pub fn push_message(&mut self, id: &str, mut m: Message, max: usize) -> Option<&Customer> {
        let c = self.customers.get_mut(id)?;
        m.seq = c.next_seq;
        c.next_seq += 1;
        m.session = c.session.as_ref().map(|s| s.id.clone()).unwrap_or_default();
        c.messages.push_back(m);
        while c.messages.len() > max {
            c.messages.pop_front();
        }
        Some(c)
    }

    /// Removes a customer and their links; returns the record (for its row key).
    pub fn erase(&mut self, id: &str) -> Option<Customer> {
        let c = self.customers.remove(id)?;
        for l in c.links.iter().filter_map(|h| from_hex(h)) {
            if self.links.get(&l).is_some_and(|o| o == id) {
                self.links.remove(&l);
            }
        }
        Some(c)
    }

    /// Applies retention at `now`: erases customers inactive for the policy's period, strips expired
    /// fields and drops emptied messages. Returns (customers changed, customers erased).
    pub fn sweep(&mut self, policy: &Policy, now: u64) -> (Vec<String>, Vec<Customer>) {
        let stale: Vec<String> = self
            .customers
            .values()
            .filter(|c| now.saturating_sub(c.last_seen) >= policy.customer.as_secs())
            .map(|c| c.id.clone())
            .collect();
        let erased = stale.iter().filter_map(|id| self.erase(id)).collect();
        let mut changed = Vec::new();
        for c in self.customers.values_mut() {
            let mut dirty = false;
            for m in c.messages.iter_mut() {
                dirty |= m.minimise(policy, now);
            }
            let before = c.messages.len();
            c.messages.retain_mut(|m| !m.is_empty());
            if dirty || before != c.messages.len() {
                changed.push(c.id.clone());
            }
        }
        (changed, erased)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{RetentionConfig, StorableField};
    use std::time::Duration;

    fn ids() -> impl FnMut() -> (String, LinkHash) {
        let mut n = 0u8;
        move || {
            n += 1;
            (format!("c-{n}"), [n; 32])
        }
    }

    #[test]
    fn a_shared_identifier_links_channels_into_one_session() {
        let mut d = Directory::default();
        let mut mk = ids();
        let (phone, email) = ([1u8; 32], [2u8; 32]);
        let (a, _) = d.attribute(&[phone], "app", 100, 1800, &mut mk, || "s-1".into());
        assert!(a.new_customer && !a.continued);
        let (b, _) = d.attribute(&[phone, email], "email", 200, 1800, &mut mk, || "s-2".into());
        assert_eq!(b.customer, a.customer);
        assert!(!b.new_customer && b.continued);
        let s = d.get(&a.customer).unwrap().session.clone().unwrap();
        assert_eq!(
            (s.id.as_str(), s.channels.clone(), s.messages),
            ("s-1", vec!["app".into(), "email".into()], 2)
        );
        // The email alone now finds them; after the window a new session starts.
        let (c, _) = d.attribute(&[email], "web", 200 + 1801, 1800, &mut mk, || "s-3".into());
        assert_eq!(c.customer, a.customer);
        assert!(!c.continued);
    }

    #[test]
    fn conflicting_links_merge_into_the_oldest_customer() {
        let mut d = Directory::default();
        let mut mk = ids();
        let (x, _) = d.attribute(&[[7; 32]], "sms", 10, 60, &mut mk, || "s-x".into());
        d.push_message(&x.customer, Message { at: 10, text: Some("first".into()), ..Default::default() }, 10);
        let (y, _) = d.attribute(&[[8; 32]], "wechat", 20, 60, &mut mk, || "s-y".into());
        d.push_message(
            &y.customer,
            Message { at: 20, text: Some("second".into()), ..Default::default() },
            10,
        );
        let (m, gone) = d.attribute(&[[7; 32], [8; 32]], "email", 30, 60, &mut mk, || "s-z".into());
        assert_eq!(m.customer, x.customer);
        assert_eq!(m.merged, vec![y.customer.clone()]);
        assert_eq!(gone.len(), 1);
        assert!(d.get(&y.customer).is_none());
        let c = d.get(&x.customer).unwrap();
        assert_eq!(
            c.messages.iter().map(|m| m.text.clone().unwrap()).collect::<Vec<_>>(),
            ["first", "second"]
        );
        assert_eq!(c.session.as_ref().unwrap().id, "s-y", "the latest session continues");
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn retention_strips_fields_then_messages_then_customers() {
        let cfg = RetentionConfig {
            fields: [
                (StorableField::Text, Duration::from_secs(10)),
                (StorableField::Intent, Duration::from_secs(100)),
            ]
            .into(),
            customer: Duration::from_secs(1000),
            ..Default::default()
        };
        let policy = Policy::from_config(&cfg);
        let mut d = Directory::default();
        let mut mk = ids();
        let (a, _) = d.attribute(&[[1; 32]], "app", 0, 60, &mut mk, || "s".into());
        let m =
            Message { at: 0, text: Some("hi".into()), intent: Some("greet".into()), ..Default::default() };
        d.push_message(&a.customer, m, 10);
        assert_eq!(d.sweep(&policy, 5).0.len(), 0);
        assert_eq!(d.sweep(&policy, 10).0, vec![a.customer.clone()]);
        assert_eq!(d.get(&a.customer).unwrap().messages[0].text, None);
        d.sweep(&policy, 100);
        assert!(d.get(&a.customer).unwrap().messages.is_empty());
        let (_, erased) = d.sweep(&policy, 1000);
        assert_eq!(erased.len(), 1);
        assert!(d.is_empty());
        let (b, _) = d.attribute(&[[1; 32]], "app", 1001, 60, &mut mk, || "s".into());
        assert!(b.new_customer, "the links went with the customer");
    }
}

//! Workflow runs: declarative steps (from the rules file) that call webhooks in order, with retries
//! (of the failures worth retrying: timeouts, failed connections, 408, 429 and 5xx; see
//! [`webhook::CallError::retryable`]) after exponential backoff with jitter, or after the wait the
//! receiver's `Retry-After` asked for, a deadline per attempt, an idempotency key per step, an audit entry per attempt, and state
//! persisted before each step so a restarted participant resumes unfinished runs where they stopped.
//!
//! A run copies its steps when it starts, so editing the rules file never changes a run in flight. The
//! `Idempotency-Key` of a step is `<run id>/<step name>`: the same on every retry and after a restart,
//! so a receiver that already applied a call recognises the repeat. A step is marked done only after
//! its call succeeded and that is persisted; a crash in between repeats the call with the same key.
//! A run whose customer is erased is removed and stops before its next step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hearth_audit::{Action, Event, Outcome};
use hearth_node::audit::AuditLog;
use hearth_node::keys::NodeKeys;
use serde::{Deserialize, Serialize};

use super::rules::StepDef;
use super::store::{run_object, Writer};
use super::unix_now;
use super::webhook::{self, Target};
use crate::error::StoreError;

/// Longest backoff between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Longest wait a receiver's `Retry-After` gets; a longer one is waited this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// The wait before a retry: the receiver's `Retry-After` when it gave one (at most
/// [`MAX_RETRY_AFTER`]), else `backoff` with jitter: uniformly between half of it and all of it, so
/// that runs failing together do not retry together.
fn retry_wait(backoff: Duration, retry_after: Option<Duration>, rng: &mut impl rand::Rng) -> Duration {
    match retry_after {
        Some(d) => d.min(MAX_RETRY_AFTER),
        None => {
            let half = backoff / 2;
            half + half.mul_f64(rng.random::<f64>())
        }
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Steps remain.
    Running,
    /// Every step succeeded.
    Done,
    /// A step failed: its retries were spent, or its call was refused in a way a repeat would not change.
    Failed,
}

/// One workflow run, as persisted.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Run {
    /// `w-` and 32 hex digits, random.
    pub id: String,
    /// The workflow's name in the rules file.
    pub workflow: String,
    /// The customer it is about.
    pub customer: String,
    /// What the webhooks are told (order id, intent, emotion, channel).
    #[schema(value_type = Object)]
    pub context: serde_json::Value,
    /// The steps, as they were when the run started.
    pub steps: Vec<StepDef>,
    /// The first step not done yet.
    pub next: usize,
    /// Where it is.
    pub status: RunStatus,
    /// Unix seconds it started.
    pub started: u64,
    /// Unix seconds it finished.
    pub finished: Option<u64>,
    /// Why a failed run failed: its step and that step's last answer or error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// The runs of this participant and what they need to proceed.
#[derive(Debug)]
pub struct Engine {
    keys: Arc<NodeKeys>,
    writer: Writer,
    audit: Option<AuditLog>,
    runs: Mutex<HashMap<String, Run>>,
    /// Makes the webhook calls (signed when the desk has a secret; `https://` checked against its CAs).
    client: webhook::Client,
}

impl Engine {
    /// An engine over the runs loaded from the store (not started: see [`Engine::resume`]), calling
    /// webhooks with `client`.
    pub fn new(
        keys: Arc<NodeKeys>,
        writer: Writer,
        audit: Option<AuditLog>,
        runs: Vec<Run>,
        client: webhook::Client,
    ) -> Self {
        let runs = runs.into_iter().map(|r| (r.id.clone(), r)).collect();
        Self { keys, writer, audit, runs: Mutex::new(runs), client }
    }

    fn runs(&self) -> MutexGuard<'_, HashMap<String, Run>> {
        // Critical sections only copy or replace a run; a panic inside one leaves a consistent map.
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, run: &Run) -> Result<(), StoreError> {
        let json =
            zeroize::Zeroizing::new(serde_json::to_vec(run).map_err(StoreError::seal("workflow run"))?);
        let sealed = self.keys.seal(&run_object(&run.id), &json).map_err(StoreError::seal("workflow run"))?;
        self.writer.put_run(&run.id, sealed)
    }

    fn audit(&self, outcome: Outcome, run: &str, detail: String) {
        if let Some(log) = &self.audit {
            log.record_event(
                Event::new("system", Action::WorkflowStep, outcome).object(run.to_string()).detail(detail),
            );
        }
    }

    /// Starts a run of `workflow` about `customer`: persisted (queued) at once, driven by a task.
    /// Blocking (sealing): call from a blocking thread; needs a runtime handle to spawn on.
    pub fn start(
        self: &Arc<Self>,
        workflow: &str,
        steps: Vec<StepDef>,
        customer: &str,
        context: serde_json::Value,
        rt: &tokio::runtime::Handle,
    ) -> Result<String, StoreError> {
        let run = Run {
            id: format!("w-{}", hex::encode(rand::random::<[u8; 16]>())),
            workflow: workflow.to_string(),
            customer: customer.to_string(),
            context,
            steps,
            next: 0,
            status: RunStatus::Running,
            started: unix_now(),
            finished: None,
            failure: None,
        };
        let id = run.id.clone();
        {
            let mut runs = self.runs();
            self.persist(&run)?;
            runs.insert(id.clone(), run);
        }
        rt.spawn(Arc::clone(self).drive(id.clone()));
        Ok(id)
    }

    /// Drives every unfinished run (after a restart).
    pub fn resume(self: &Arc<Self>) -> usize {
        let ids: Vec<String> =
            self.runs().values().filter(|r| r.status == RunStatus::Running).map(|r| r.id.clone()).collect();
        for id in &ids {
            tracing::info!(run = %id, "resuming a workflow run");
            tokio::spawn(Arc::clone(self).drive(id.clone()));
        }
        ids.len()
    }

    /// A run's current state.
    pub fn get(&self, id: &str) -> Option<Run> {
        self.runs().get(id).cloned()
    }

    /// The failed runs still kept (until retention's `workflow` age), most recently failed first, at most
    /// `limit`: the dead letters an operator looks at. Also how many failed runs there are in all.
    pub fn failed(&self, limit: usize) -> (Vec<Run>, usize) {
        let runs = self.runs();
        let mut failed: Vec<&Run> = runs.values().filter(|r| r.status == RunStatus::Failed).collect();
        failed.sort_by(|a, b| b.finished.cmp(&a.finished).then_with(|| a.id.cmp(&b.id)));
        let total = failed.len();
        (failed.into_iter().take(limit).cloned().collect(), total)
    }

    /// Removes the runs `doomed` picks, queueing their deletion under the lock: a driver saving a run
    /// takes the same lock, so its write cannot land after the deletion. Returns how many.
    fn remove_where(&self, doomed: impl Fn(&Run) -> bool) -> Result<usize, StoreError> {
        let mut runs = self.runs();
        let ids: Vec<String> = runs.values().filter(|r| doomed(r)).map(|r| r.id.clone()).collect();
        for id in &ids {
            runs.remove(id);
            self.writer.delete_run(id)?;
        }
        Ok(ids.len())
    }

    /// Removes every run about `customer` (they stop before their next step); returns how many.
    pub fn erase_customer(&self, customer: &str) -> Result<usize, StoreError> {
        self.remove_where(|r| r.customer == customer)
    }

    /// Removes finished runs older than `keep`; returns how many.
    pub fn sweep(&self, keep: Duration, now: u64) -> Result<usize, StoreError> {
        self.remove_where(|r| r.finished.is_some_and(|f| now.saturating_sub(f) >= keep.as_secs()))
    }

    /// Points the runs of customers merged away (`from`) at the customer they were merged into, so an
    /// erasure of that customer still finds them. Blocking (sealing).
    pub fn reassign(&self, from: &[String], to: &str) -> Result<(), StoreError> {
        let mut runs = self.runs();
        for r in runs.values_mut().filter(|r| from.contains(&r.customer)) {
            r.customer = to.to_string();
            self.persist(r)?;
        }
        Ok(())
    }

    /// Saves `run` durably if it still exists (an erasure may have removed it meanwhile); `false` when
    /// it no longer does. The record is sealed and queued under the lock (see [`Engine::remove_where`]);
    /// sealing is a few microseconds of CPU.
    async fn save(&self, run: &Run) -> Result<bool, StoreError> {
        {
            let mut runs = self.runs();
            let Some(current) = runs.get(&run.id) else { return Ok(false) };
            // The customer may have been reassigned by a merge since the driver read the run.
            let r = Run { customer: current.customer.clone(), ..run.clone() };
            self.persist(&r)?;
            runs.insert(run.id.clone(), r);
        }
        self.writer.flush().await?;
        Ok(true)
    }

    async fn drive(self: Arc<Self>, id: String) {
        if let Err(e) = self.drive_inner(&id).await {
            tracing::error!(run = %id, error = %e, "workflow run stopped: its state could not be saved");
        }
    }

    async fn drive_inner(&self, id: &str) -> Result<(), StoreError> {
        loop {
            let Some(mut run) = self.get(id) else { return Ok(()) };
            if run.status != RunStatus::Running {
                return Ok(());
            }
            let Some(step) = run.steps.get(run.next).cloned() else {
                run.status = RunStatus::Done;
                run.finished = Some(unix_now());
                forget_text(&mut run);
                self.save(&run).await?;
                self.audit(Outcome::Ok, id, format!("{}: done", run.workflow));
                return Ok(());
            };
            // The state saying this step is next is on disk before the call.
            if !self.save(&run).await? {
                return Ok(());
            }
            let called = self.call_with_retries(&run, &step).await;
            if self.get(id).is_none() {
                return Ok(());
            }
            match called {
                Ok(()) => run.next += 1,
                Err(why) => {
                    run.status = RunStatus::Failed;
                    run.finished = Some(unix_now());
                    run.failure = Some(format!("step {}: {why}", step.name));
                    forget_text(&mut run);
                    if !self.save(&run).await? {
                        return Ok(()); // erased meanwhile
                    }
                    self.audit(
                        Outcome::Error,
                        id,
                        format!("{}: failed at step {}: {why}", run.workflow, step.name),
                    );
                    return Ok(());
                }
            }
            self.save(&run).await?;
        }
    }

    /// Calls one step until it succeeds or its retries are spent; audits each attempt. The error is the
    /// last attempt's.
    async fn call_with_retries(&self, run: &Run, step: &StepDef) -> Result<(), StepFailure> {
        let key = format!("{}/{}", run.id, step.name);
        let target = match step.url.as_deref().map(Target::parse) {
            Some(Ok(t)) => t,
            _ => {
                self.audit(Outcome::Error, &run.id, format!("{}/{}: no valid url", run.workflow, step.name));
                return Err(StepFailure::NoUrl);
            }
        };
        let body = serde_json::json!({
            "workflow": run.workflow,
            "run_id": run.id,
            "step": step.name,
            "customer_id": run.customer,
            "context": run.context,
        })
        .to_string()
        .into_bytes();
        let mut backoff = Duration::from_millis(step.backoff_ms).min(MAX_BACKOFF);
        for attempt in 1.. {
            if self.get(&run.id).is_none() {
                return Err(StepFailure::Erased);
            }
            let timeout = Duration::from_millis(step.timeout_ms);
            let r = self.client.post(&target, &key, body.clone(), timeout).await;
            let what = format!("{}/{} attempt {attempt}", run.workflow, step.name);
            match r {
                Ok(status) => {
                    self.audit(Outcome::Ok, &run.id, format!("{what}: HTTP {status}"));
                    return Ok(());
                }
                Err(e) if !e.retryable() => {
                    let detail = format!("{what}: {e}, which a repeat would not change: not retried");
                    self.audit(Outcome::Error, &run.id, detail);
                    return Err(StepFailure::Refused { attempt, error: e });
                }
                Err(e) => {
                    self.audit(Outcome::Error, &run.id, format!("{what}: {e}"));
                    if attempt > step.retries {
                        return Err(StepFailure::Exhausted { attempt, error: e });
                    }
                    let wait = retry_wait(backoff, e.retry_after(), &mut rand::rng());
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        unreachable!("the attempts count up until one returns")
    }
}

/// A run that ended keeps no free text in its context (an agent's reply carries one until delivered):
/// the text is kept, if the retention policy keeps texts, with the customer's messages, not in the run.
fn forget_text(run: &mut Run) {
    if let Some(context) = run.context.as_object_mut() {
        context.remove("text");
    }
}

/// Why a step failed: what a failed run's `failure` says after the step's name.
#[derive(Debug, thiserror::Error)]
enum StepFailure {
    /// The step has no URL that parses.
    #[error("no valid url")]
    NoUrl,
    /// The run was erased with its customer.
    #[error("erased")]
    Erased,
    /// The receiver refused the call in a way a repeat would not change.
    #[error("attempt {attempt}: {error}, not retried")]
    Refused { attempt: u32, error: webhook::CallError },
    /// Every attempt failed.
    #[error("attempt {attempt}: {error}")]
    Exhausted { attempt: u32, error: webhook::CallError },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_within_its_upper_half_and_retry_after_is_capped() {
        let mut rng = rand::rng();
        let backoff = Duration::from_millis(1000);
        let waits: Vec<Duration> = (0..200).map(|_| retry_wait(backoff, None, &mut rng)).collect();
        assert!(waits.iter().all(|w| *w >= backoff / 2 && *w <= backoff), "{waits:?}");
        assert!(waits.iter().any(|w| *w != waits[0]), "jittered");
        let asked = Some(Duration::from_secs(7));
        assert_eq!(retry_wait(backoff, asked, &mut rng), Duration::from_secs(7));
        assert_eq!(retry_wait(backoff, Some(Duration::from_secs(86_400)), &mut rng), MAX_RETRY_AFTER);
    }
}

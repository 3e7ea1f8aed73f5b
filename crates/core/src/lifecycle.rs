//! The task state machine. Every change to a task's state goes through one of these functions;
//! each checks that the change is allowed from the current state (and, for a worker's call, that
//! the caller holds the current lease) and leaves the task untouched when it is not.
//!
//! ```text
//!             delay / backoff
//!   submit ──► scheduled ──(run_at passes)──► ready ──(lease)──► running ──► succeeded
//!     │                                        ▲  ▲                │  │
//!     └──────────────(due now)─────────────────┘  └──(release)─────┘  ├──► failed (dead letter)
//!                                                                     └──► cancelled
//!   running ──(retryable failure / lease expired)──► scheduled (with backoff)
//!   failed | cancelled ──(manual retry)──► ready
//! ```
//!
//! A transition that the event log records notes it in [`Task::event`] (see [`crate::events`]);
//! one it does not record (a promotion, a bare heartbeat) leaves the note as it was.

use std::time::Duration;

use serde_json::value::RawValue;
use thiserror::Error;

use crate::events::EventType;
use crate::id::LeaseToken;
use crate::protocol::{HeldLease, ItemStatus, LeaseStatus, Outcome};
use crate::task::{Attempt, AttemptOutcome, Lease, Progress, Task, TaskState};
use crate::time::Timestamp;
use crate::validate::truncate_error;

/// Why a transition was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TransitionError {
    #[error("cannot {action} a task that is {state}")]
    InvalidState { action: &'static str, state: TaskState },
    /// The caller's lease is not the task's current lease: it expired and the task moved on.
    #[error("the lease is no longer held (expired or replaced by a newer attempt)")]
    LeaseLost,
    #[error("the task is not due until {0}")]
    NotDue(Timestamp),
    #[error("the lease has not expired yet")]
    LeaseActive,
}

/// What a handler asks for when its attempt fails.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RetryRequest {
    /// Retry per the task's backoff policy, if attempts remain.
    Backoff,
    /// Retry after this delay, if attempts remain.
    After(Duration),
    /// Do not retry: the task fails now.
    Never,
}

/// What a cancel did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cancellation {
    /// The task was not running and is now cancelled.
    Cancelled,
    /// The task is running: its worker learns of the request in its next heartbeat reply.
    Requested,
}

/// How an attempt ran, as the worker measured it on its own clock (see [`Task::apply_report`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunTiming {
    /// How long the handler ran.
    pub ran: Option<Duration>,
    /// How long before the report was recorded the handler finished.
    pub done_ago: Option<Duration>,
}

impl RunTiming {
    /// What a report says of it.
    pub fn of(report: &crate::protocol::Report) -> RunTiming {
        RunTiming {
            ran: report.ran_us.map(Duration::from_micros),
            done_ago: report.done_ago_us.map(Duration::from_micros),
        }
    }
}

impl Task {
    fn refuse(&self, action: &'static str) -> TransitionError {
        TransitionError::InvalidState { action, state: self.state }
    }

    fn current_lease(&self, token: LeaseToken) -> Result<&Lease, TransitionError> {
        match &self.lease {
            Some(lease) if self.state == TaskState::Running && lease.token == token => Ok(lease),
            _ => Err(TransitionError::LeaseLost),
        }
    }

    /// Sets the next run time: ready if already due, else scheduled.
    fn schedule(&mut self, run_at: Timestamp, now: Timestamp) {
        self.run_at = run_at;
        self.state = if run_at <= now { TaskState::Ready } else { TaskState::Scheduled };
    }

    fn finish(&mut self, state: TaskState, now: Timestamp) {
        self.state = state;
        self.finished_at = Some(now);
    }

    /// Ends the running attempt and records it in the history.
    fn end_attempt(&mut self, outcome: AttemptOutcome, error: Option<String>, now: Timestamp) -> Attempt {
        let lease = self.lease.take().expect("a running task holds a lease");
        let attempt = Attempt {
            number: lease.attempt,
            worker_id: lease.worker_id,
            started_at: lease.started_at,
            finished_at: now.max(lease.started_at),
            outcome,
            error,
        };
        self.history.push(attempt.clone());
        self.updated_at = now;
        attempt
    }

    /// After a failed or timed-out attempt: retry later, or dead-letter when the budget is spent.
    fn after_failure(&mut self, retry: RetryRequest, error: String, now: Timestamp, random: f64) {
        self.error = Some(error);
        if self.cancel_requested {
            self.finish(TaskState::Cancelled, now);
            self.event = Some(EventType::TaskCancelled);
            return;
        }
        let delay = match retry {
            _ if self.attempts >= self.attempt_limit => None,
            RetryRequest::Never => None,
            RetryRequest::After(d) => Some(d),
            RetryRequest::Backoff => Some(self.backoff.delay(self.attempts, random)),
        };
        match delay {
            Some(d) => {
                self.schedule(now.saturating_add(d), now);
                self.event = Some(EventType::TaskRetrying);
            }
            None => {
                self.finish(TaskState::Failed, now);
                self.event = Some(EventType::TaskFailed);
            }
        }
    }

    /// Scheduled → ready, once `run_at` has passed.
    pub fn promote(&mut self, now: Timestamp) -> Result<(), TransitionError> {
        if self.state != TaskState::Scheduled {
            return Err(self.refuse("promote"));
        }
        if self.run_at > now {
            return Err(TransitionError::NotDue(self.run_at));
        }
        self.state = TaskState::Ready;
        self.updated_at = now;
        Ok(())
    }

    /// Scheduled (waiting for its parents) → ready: every parent of this workflow task finished.
    pub fn dependencies_met(&mut self, now: Timestamp) -> Result<(), TransitionError> {
        if self.state != TaskState::Scheduled || self.run_at != Timestamp::NEVER {
            return Err(self.refuse("release the dependencies of"));
        }
        self.updated_at = now;
        self.schedule(now, now);
        Ok(())
    }

    /// Ready → running under a new lease held by `worker_id`. Refused once the task has expired
    /// (see [`Task::expire_unstarted`]).
    pub fn start(&mut self, worker_id: &str, token: LeaseToken, now: Timestamp) -> Result<&Lease, TransitionError> {
        if self.state != TaskState::Ready || self.has_expired(now) {
            return Err(self.refuse("start"));
        }
        self.attempts += 1;
        self.state = TaskState::Running;
        self.progress = None;
        self.updated_at = now;
        self.event = Some(EventType::TaskStarted);
        let deadline = now.saturating_add(self.timeout).saturating_add(self.lease_timeout);
        self.lease = Some(Lease {
            token,
            worker_id: worker_id.to_owned(),
            attempt: self.attempts,
            started_at: now,
            expires_at: now.saturating_add(self.lease_timeout).min(deadline),
            deadline,
        });
        Ok(self.lease.as_ref().expect("just set"))
    }

    /// Extends the lease. Returns whether cancellation has been requested.
    pub fn heartbeat(&mut self, token: LeaseToken, now: Timestamp) -> Result<bool, TransitionError> {
        let lease_timeout = self.lease_timeout;
        self.current_lease(token)?;
        let lease = self.lease.as_mut().expect("checked");
        lease.expires_at = lease.expires_at.max(now.saturating_add(lease_timeout).min(lease.deadline));
        self.updated_at = now;
        Ok(self.cancel_requested)
    }

    pub fn report_progress(
        &mut self,
        token: LeaseToken,
        progress: Progress,
        now: Timestamp,
    ) -> Result<(), TransitionError> {
        self.current_lease(token)?;
        self.progress = Some(progress);
        self.updated_at = now;
        self.event = Some(EventType::TaskProgress);
        Ok(())
    }

    /// Running → succeeded (or cancelled, if a cancel was requested meanwhile; the result is kept).
    pub fn succeed(
        &mut self,
        token: LeaseToken,
        result: Box<RawValue>,
        now: Timestamp,
    ) -> Result<Attempt, TransitionError> {
        self.current_lease(token)?;
        let attempt = self.end_attempt(AttemptOutcome::Succeeded, None, now);
        self.result = Some(result);
        self.error = None;
        let (state, event) = match self.cancel_requested {
            true => (TaskState::Cancelled, EventType::TaskCancelled),
            false => (TaskState::Succeeded, EventType::TaskSucceeded),
        };
        self.finish(state, now);
        self.event = Some(event);
        Ok(attempt)
    }

    /// Running → scheduled (retry), failed (dead letter) or cancelled.
    /// `random` is a uniform draw from `[0, 1)` for the backoff's jitter.
    pub fn fail(
        &mut self,
        token: LeaseToken,
        error: String,
        retry: RetryRequest,
        now: Timestamp,
        random: f64,
    ) -> Result<Attempt, TransitionError> {
        self.current_lease(token)?;
        let attempt = self.end_attempt(AttemptOutcome::Failed, Some(error.clone()), now);
        self.after_failure(retry, error, now, random);
        Ok(attempt)
    }

    /// Running → cancelled, when the handler stopped because it was cancelled.
    pub fn acknowledge_cancel(&mut self, token: LeaseToken, now: Timestamp) -> Result<Attempt, TransitionError> {
        self.current_lease(token)?;
        let attempt = self.end_attempt(AttemptOutcome::Cancelled, None, now);
        self.finish(TaskState::Cancelled, now);
        self.event = Some(EventType::TaskCancelled);
        Ok(attempt)
    }

    /// Applies a worker's report of how its attempt ended: the transition the outcome names, with
    /// a failure's error cut to the stored limit. Refused (the task untouched) unless `token` is
    /// the current lease.
    ///
    /// With the worker's timing, the attempt is dated by its handler rather than by the lease
    /// and the report's arrival: it ended `timing.done_ago` before `now` and started `timing.ran`
    /// before that (never outside its lease's start and `now`). So the time a prefetched task
    /// waited for a slot, or an outcome waited to be carried, is not counted as running.
    pub fn apply_report(
        &mut self,
        token: LeaseToken,
        outcome: Outcome,
        timing: RunTiming,
        now: Timestamp,
        random: f64,
    ) -> Result<Attempt, TransitionError> {
        let mut attempt = self.apply_outcome(token, outcome, now, random)?;
        if let Some(ago) = timing.done_ago {
            attempt.finished_at = attempt.finished_at.saturating_sub(ago).max(attempt.started_at);
        }
        if let Some(ran) = timing.ran {
            attempt.started_at = attempt.finished_at.saturating_sub(ran).max(attempt.started_at);
        }
        if let Some(last) = self.history.last_mut() {
            (last.started_at, last.finished_at) = (attempt.started_at, attempt.finished_at);
        }
        Ok(attempt)
    }

    fn apply_outcome(
        &mut self,
        token: LeaseToken,
        outcome: Outcome,
        now: Timestamp,
        random: f64,
    ) -> Result<Attempt, TransitionError> {
        match outcome {
            Outcome::Succeeded { result } => self.succeed(token, result, now),
            Outcome::Failed { error, retry_after_ms, permanent } => {
                let retry = match (permanent, retry_after_ms) {
                    (true, _) => RetryRequest::Never,
                    (false, Some(ms)) => RetryRequest::After(Duration::from_millis(ms)),
                    (false, None) => RetryRequest::Backoff,
                };
                self.fail(token, truncate_error(error), retry, now, random)
            }
            Outcome::Cancelled => self.acknowledge_cancel(token, now),
            Outcome::Released => self.release(token, now),
        }
    }

    /// A worker's heartbeat for one lease it holds, with its progress: extends the lease and
    /// answers what the worker is told. The task changed only when the answer is `Ok`.
    ///
    /// With `worker`, the lease must also be held by that worker: a worker cannot extend or
    /// report on a lease another worker holds, even with its token.
    pub fn beat(&mut self, worker: Option<&str>, held: &HeldLease, now: Timestamp) -> LeaseStatus {
        let beat = self.check_holder(worker).and_then(|()| self.heartbeat(held.lease, now)).and_then(|cancel| {
            if let Some(progress) = held.progress.clone() {
                self.report_progress(held.lease, progress, now)?;
            }
            Ok(cancel)
        });
        match beat {
            Ok(cancel_requested) => LeaseStatus {
                task_id: self.id,
                status: ItemStatus::Ok,
                cancel_requested,
                lease_expires_at: self.lease.as_ref().map(|l| l.expires_at),
            },
            Err(_) => LeaseStatus {
                task_id: self.id,
                status: ItemStatus::LeaseLost,
                cancel_requested: self.cancel_requested,
                lease_expires_at: None,
            },
        }
    }

    /// Refuses (as a lost lease) a call from a worker other than the one that holds the lease;
    /// `None` checks nothing.
    pub fn check_holder(&self, worker: Option<&str>) -> Result<(), TransitionError> {
        match worker {
            Some(w) if !self.leased_to(w) => Err(TransitionError::LeaseLost),
            _ => Ok(()),
        }
    }

    /// Running → ready: the worker gives the task back unfinished (it is shutting down). The
    /// attempt does not count against the retry budget.
    pub fn release(&mut self, token: LeaseToken, now: Timestamp) -> Result<Attempt, TransitionError> {
        self.current_lease(token)?;
        let attempt = self.end_attempt(AttemptOutcome::Released, None, now);
        self.attempt_limit = self.attempt_limit.saturating_add(1);
        if self.cancel_requested {
            self.finish(TaskState::Cancelled, now);
            self.event = Some(EventType::TaskCancelled);
        } else {
            self.schedule(now, now);
            self.event = Some(EventType::TaskReleased);
        }
        Ok(attempt)
    }

    /// Running with an expired lease → retried or dead-lettered, as a timed-out attempt.
    /// Uses only the server's clock (`now`), never the worker's.
    pub fn expire(&mut self, now: Timestamp, random: f64) -> Result<Attempt, TransitionError> {
        match &self.lease {
            Some(lease) if self.state == TaskState::Running => {
                if lease.expires_at > now {
                    return Err(TransitionError::LeaseActive);
                }
            }
            _ => return Err(self.refuse("expire the lease of")),
        }
        let error = "lease expired: no heartbeat or result before the deadline".to_owned();
        let attempt = self.end_attempt(AttemptOutcome::TimedOut, Some(error.clone()), now);
        self.after_failure(RetryRequest::Backoff, error, now, random);
        if self.event == Some(EventType::TaskRetrying) {
            self.event = Some(EventType::TaskLeaseExpired);
        }
        Ok(attempt)
    }

    /// Cancels a task: at once unless it is running; a running task's worker is asked to stop.
    pub fn cancel(&mut self, now: Timestamp) -> Result<Cancellation, TransitionError> {
        match self.state {
            TaskState::Scheduled | TaskState::Ready => {
                self.finish(TaskState::Cancelled, now);
                self.updated_at = now;
                self.event = Some(EventType::TaskCancelled);
                Ok(Cancellation::Cancelled)
            }
            TaskState::Running => {
                self.cancel_requested = true;
                self.updated_at = now;
                Ok(Cancellation::Requested)
            }
            _ => Err(self.refuse("cancel")),
        }
    }

    /// Scheduled or ready → expired: its `expires_at` has come and no attempt may start.
    pub fn expire_unstarted(&mut self, now: Timestamp) -> Result<(), TransitionError> {
        if !matches!(self.state, TaskState::Scheduled | TaskState::Ready) {
            return Err(self.refuse("expire"));
        }
        let Some(expires_at) = self.expires_at.filter(|e| *e <= now) else {
            return Err(self.refuse("expire, before its expires_at,"));
        };
        self.error = Some(format!("expired: not started by {expires_at}"));
        self.updated_at = now;
        self.finish(TaskState::Expired, now);
        self.event = Some(EventType::TaskExpired);
        Ok(())
    }

    /// Whether no attempt may start any more (its `expires_at` has come).
    pub fn has_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }

    /// Takes out of tasks chosen to start those whose `expires_at` has come, expired (see
    /// [`Task::expire_unstarted`]), for the caller to save; the rest may start. Allocates only
    /// when one has expired.
    pub fn take_expired(tasks: &mut Vec<Task>, now: Timestamp) -> Vec<Task> {
        if !tasks.iter().any(|t| t.has_expired(now)) {
            return Vec::new();
        }
        let (mut expired, kept): (Vec<Task>, Vec<Task>) =
            std::mem::take(tasks).into_iter().partition(|t| t.has_expired(now));
        *tasks = kept;
        for task in &mut expired {
            task.expire_unstarted(now).expect("a task chosen to start is ready, and it has expired");
        }
        expired
    }

    /// Failed, cancelled or expired → ready, with a fresh attempt budget. An expired task loses
    /// its `expires_at`: retrying it by hand says to run it after all.
    pub fn retry(&mut self, now: Timestamp) -> Result<(), TransitionError> {
        if !matches!(self.state, TaskState::Failed | TaskState::Cancelled | TaskState::Expired) {
            return Err(self.refuse("retry"));
        }
        if self.state == TaskState::Expired {
            self.expires_at = None;
        }
        self.attempt_limit = self.attempts.saturating_add(self.max_attempts);
        self.cancel_requested = false;
        self.finished_at = None;
        self.error = None;
        self.result = None;
        self.updated_at = now;
        self.schedule(now, now);
        self.event = Some(EventType::TaskRetried);
        Ok(())
    }

    /// Failed or cancelled → waiting again, as a workflow retry re-runs it: like [`Task::retry`]
    /// (a fresh attempt budget, the history kept), but a task whose parents run again too waits
    /// for them, scheduled until [`Task::dependencies_met`].
    pub fn rerun(&mut self, waits_for_parents: bool, now: Timestamp) -> Result<(), TransitionError> {
        self.retry(now)?;
        if waits_for_parents {
            self.state = TaskState::Scheduled;
            self.run_at = Timestamp::NEVER;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

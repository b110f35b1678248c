//! Account deletion, after `DELETE /api/v1/me`: a saga driven by the
//! outbox. The user row (and with it push tokens and upload records) went
//! in the request's transaction with a `UserDeleted` event; from that
//! event the `account-deletion` consumer group starts a chain of jobs, one
//! per step, each idempotent and retried until it succeeds:
//!
//! 1. `objects`: every stored object of the user (`users/<id>/...`);
//! 2. `sockets`: their WebSocket connections, on every instance, and what
//!    realtime recorded for them (their topic's history);
//! 3. `jobs`: their queued jobs (welcome mail, pushes, deliveries); a job
//!    still running is waited for, so none is left behind;
//! 4. `identity`: the Firebase Auth account, when service-account
//!    credentials (or the emulator) are configured;
//! 5. `late_objects`: the objects again, once every upload form issued
//!    before the deletion has expired (and a file posted with one at the
//!    last moment has arrived): a form stays valid for minutes, and what it
//!    brings would otherwise stay under `users/<id>/` for ever.
//!
//! No token issued before the deletion proves the uid any more (the
//! deletion's tombstone), so nothing a still-running app sends brings the
//! account back. Steps 2 to 4 act on the uid, not the deleted row: if the
//! same uid has genuinely signed up again meanwhile (a token issued after
//! the deletion; a new profile, a new user id), they are skipped, so the
//! new account keeps its sockets, jobs and sign-in.
//!
//! Each step enqueues the next under a unique key, so a step that runs
//! twice (a worker killed after it, before its ack) starts the next once.
//! The steps are jobs in the queue: the ops console shows where a deletion
//! is, and a step that keeps failing ends in the dead set for an operator.
//! The end is logged and counted (`account_deletions_completed_total`).

use async_trait::async_trait;
use domain::{DomainEvent, EventEnvelope, FirebaseUid, Upload, UserId};
use ports::{
    Audience, Disconnect, EnqueueJobError, EventHandler, HandleEventError, HandleJob,
    IdentityAdmin, Job, JobContext, JobFailure, JobQueue, NewJob, Notifier, ObjectStore,
    UserRepository,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// The consumer group that starts deletion sagas.
pub const ACCOUNT_DELETION_GROUP: &str = "account-deletion";
/// How long a step's unique key outlives it.
const STEP_UNIQUE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Retries of one step before it is dead (with backoff: days).
const STEP_RETRIES: u32 = 25;

/// A step of the saga, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EraseStep {
    Objects,
    Sockets,
    Jobs,
    Identity,
    LateObjects,
}

impl EraseStep {
    pub const ALL: [Self; 5] = [
        Self::Objects,
        Self::Sockets,
        Self::Jobs,
        Self::Identity,
        Self::LateObjects,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Objects => "objects",
            Self::Sockets => "sockets",
            Self::Jobs => "jobs",
            Self::Identity => "identity",
            Self::LateObjects => "late_objects",
        }
    }

    fn next(self) -> Option<Self> {
        match self {
            Self::Objects => Some(Self::Sockets),
            Self::Sockets => Some(Self::Jobs),
            Self::Jobs => Some(Self::Identity),
            Self::Identity => Some(Self::LateObjects),
            Self::LateObjects => None,
        }
    }

    /// Whether the step acts on the deleted account's own id (its stored
    /// objects), which no new sign-up of the uid shares.
    fn on_the_deleted_id(self) -> bool {
        matches!(self, Self::Objects | Self::LateObjects)
    }
}

/// How long after the other steps the objects are swept again, by
/// default: an upload form's lifetime and room for a file posted with it
/// at the last moment to arrive.
pub const LATE_SWEEP_AFTER: Duration = Duration::from_secs(15 * 60 + 10 * 60);

/// `account:erase`: one step of one user's deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EraseAccountJob {
    pub user_id: UserId,
    pub uid: FirebaseUid,
    pub step: EraseStep,
}

impl Job for EraseAccountJob {
    const KIND: &'static str = "account:erase";
    const QUEUE: &'static str = "default";
    const VERSION: u16 = 1;
}

impl EraseAccountJob {
    /// The job for `step`, unique per user and step.
    pub fn new_job(
        user_id: UserId,
        uid: FirebaseUid,
        step: EraseStep,
    ) -> Result<NewJob, serde_json::Error> {
        let job = Self { user_id, uid, step };
        Ok(NewJob::of(&job)?
            .max_retries(STEP_RETRIES)
            .timeout(Duration::from_secs(300))
            .unique(
                format!("erase:{user_id}:{}", step.as_str()),
                STEP_UNIQUE_TTL,
            ))
    }
}

/// Enqueues `step` of a deletion, to run at `at` (at once: `None`);
/// `Duplicate`: it is already queued.
async fn enqueue_step(
    jobs: &dyn JobQueue,
    user_id: UserId,
    uid: &FirebaseUid,
    step: EraseStep,
    at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), EnqueueJobError> {
    let mut job = EraseAccountJob::new_job(user_id, uid.clone(), step)
        .map_err(|e| EnqueueJobError::Invalid(e.to_string()))?;
    if let Some(at) = at {
        job = job.run_at(at);
    }
    jobs.enqueue(job).await.map(|_| ())
}

/// Starts the saga for every `UserDeleted`.
#[derive(Clone)]
pub struct AccountDeletionTrigger {
    jobs: Arc<dyn JobQueue>,
}

impl std::fmt::Debug for AccountDeletionTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountDeletionTrigger")
            .finish_non_exhaustive()
    }
}

impl AccountDeletionTrigger {
    pub fn new(jobs: Arc<dyn JobQueue>) -> Self {
        Self { jobs }
    }
}

#[async_trait]
impl EventHandler for AccountDeletionTrigger {
    fn handles(&self, event: &DomainEvent) -> bool {
        matches!(event, DomainEvent::UserDeleted(_))
    }

    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandleEventError> {
        let DomainEvent::UserDeleted(deleted) = &event.event else {
            return Ok(());
        };
        match enqueue_step(
            self.jobs.as_ref(),
            deleted.user_id,
            &deleted.uid,
            EraseStep::Objects,
            None,
        )
        .await
        {
            Ok(()) => {
                tracing::info!(user_id = %deleted.user_id, event_id = %event.id, "account deletion started");
                metrics::counter!("account_deletions_started_total").increment(1);
                Ok(())
            }
            // The event delivered again: its saga is already under way.
            Err(EnqueueJobError::Duplicate { .. }) => Ok(()),
            Err(EnqueueJobError::Invalid(why)) => Err(HandleEventError::Reject(why)),
            Err(EnqueueJobError::Unavailable(e) | EnqueueJobError::Unknown(e)) => {
                Err(HandleEventError::Retry(e))
            }
        }
    }
}

/// Runs the steps of `account:erase`.
#[derive(Clone)]
pub struct EraseAccount {
    users: Arc<dyn UserRepository>,
    store: Arc<dyn ObjectStore>,
    notifier: Arc<dyn Notifier>,
    jobs: Arc<dyn JobQueue>,
    identity: Option<Arc<dyn IdentityAdmin>>,
    late_sweep_after: Duration,
}

impl std::fmt::Debug for EraseAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EraseAccount")
            .field("identity", &self.identity.as_ref().map(|i| i.describe()))
            .finish_non_exhaustive()
    }
}

impl EraseAccount {
    /// `identity`: `None` when no credentials can delete Firebase accounts
    /// (the step then only says so).
    pub fn new(
        users: Arc<dyn UserRepository>,
        store: Arc<dyn ObjectStore>,
        notifier: Arc<dyn Notifier>,
        jobs: Arc<dyn JobQueue>,
        identity: Option<Arc<dyn IdentityAdmin>>,
    ) -> Self {
        Self {
            users,
            store,
            notifier,
            jobs,
            identity,
            late_sweep_after: LATE_SWEEP_AFTER,
        }
    }

    /// Sweeps the objects again `after` the other steps (at least the
    /// upload forms' lifetime, see [`LATE_SWEEP_AFTER`]).
    pub fn with_late_sweep(mut self, after: Duration) -> Self {
        self.late_sweep_after = after;
        self
    }

    async fn step(&self, job: &EraseAccountJob) -> Result<(), JobFailure> {
        let user_id = job.user_id;
        if !job.step.on_the_deleted_id() {
            let now = self
                .users
                .find_by_uid(&job.uid)
                .await
                .map_err(JobFailure::retry)?;
            if let Some(again) = now.filter(|u| u.id != user_id) {
                tracing::info!(%user_id, new_user_id = %again.id, step = job.step.as_str(), "deleted account: the uid signed up again; its new account is left alone");
                return Ok(());
            }
        }
        match job.step {
            EraseStep::Objects | EraseStep::LateObjects => {
                let n = self
                    .store
                    .delete_prefix(&Upload::user_prefix(user_id))
                    .await
                    .map_err(JobFailure::retry)?;
                tracing::info!(%user_id, objects = n, step = job.step.as_str(), "deleted account: stored objects deleted");
            }
            EraseStep::Sockets => {
                self.notifier
                    .disconnect(
                        &Audience::User(job.uid.clone()),
                        &Disconnect::account_deleted(),
                    )
                    .await
                    .map_err(JobFailure::retry)?;
                self.notifier
                    .forget_user(&job.uid)
                    .await
                    .map_err(JobFailure::retry)?;
                tracing::info!(%user_id, "deleted account: sockets closed, realtime history dropped");
            }
            EraseStep::Jobs => {
                let done = self
                    .jobs
                    .cancel_owned(job.uid.as_str())
                    .await
                    .map_err(JobFailure::retry)?;
                tracing::info!(%user_id, cancelled = done.cancelled, running = done.running, "deleted account: queued jobs cancelled");
                if done.running > 0 {
                    // Back when they are done (or waiting for a retry,
                    // which the next attempt cancels).
                    return Err(JobFailure::retry(format!(
                        "{} of the user's jobs are still running",
                        done.running
                    )));
                }
            }
            EraseStep::Identity => match &self.identity {
                Some(identity) => {
                    identity
                        .delete_user(&job.uid)
                        .await
                        .map_err(JobFailure::retry)?;
                    tracing::info!(%user_id, "deleted account: Firebase Auth user deleted");
                }
                None => {
                    tracing::warn!(%user_id, "deleted account: the Firebase Auth user is NOT deleted (no service-account credentials); delete it from the Firebase console or configure GOOGLE_APPLICATION_CREDENTIALS");
                }
            },
        }
        Ok(())
    }
}

#[async_trait]
impl HandleJob for EraseAccount {
    type Job = EraseAccountJob;

    async fn run(&self, job: EraseAccountJob, _ctx: &JobContext) -> Result<(), JobFailure> {
        let step = job.step.as_str();
        if let Err(e) = self.step(&job).await {
            metrics::counter!("account_deletion_steps_total", "step" => step, "outcome" => "retry")
                .increment(1);
            return Err(e);
        }
        metrics::counter!("account_deletion_steps_total", "step" => step, "outcome" => "done")
            .increment(1);
        match job.step.next() {
            // A step that ran twice finds its next one already queued.
            Some(next) => match enqueue_step(
                self.jobs.as_ref(),
                job.user_id,
                &job.uid,
                next,
                (next == EraseStep::LateObjects).then(|| {
                    chrono::Utc::now()
                        + chrono::Duration::from_std(self.late_sweep_after)
                            .unwrap_or(chrono::Duration::MAX)
                }),
            )
            .await
            {
                Ok(()) | Err(EnqueueJobError::Duplicate { .. }) => {}
                Err(e) => return Err(JobFailure::retry(e)),
            },
            None => {
                tracing::info!(user_id = %job.user_id, "account deletion complete");
                metrics::counter!("account_deletions_completed_total").increment(1);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

/// How long a deletion's tombstone is kept: longer than any token issued
/// before it can still be valid (Firebase ID tokens live an hour; a local
/// dev token as long as it was minted for, a day by default).
pub const TOMBSTONE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// `account:forget-deletions`: the periodic job that drops tombstones past
/// [`TOMBSTONE_RETENTION`] (no payload).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetDeletionsJob {}

impl Job for ForgetDeletionsJob {
    const KIND: &'static str = "account:forget-deletions";
    const QUEUE: &'static str = "default";
    const VERSION: u16 = 1;
}

/// Runs [`ForgetDeletionsJob`].
#[derive(Clone)]
pub struct ForgetDeletions {
    users: Arc<dyn UserRepository>,
}

impl std::fmt::Debug for ForgetDeletions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForgetDeletions").finish_non_exhaustive()
    }
}

impl ForgetDeletions {
    pub fn new(users: Arc<dyn UserRepository>) -> Self {
        Self { users }
    }
}

#[async_trait]
impl HandleJob for ForgetDeletions {
    type Job = ForgetDeletionsJob;

    async fn run(&self, _: ForgetDeletionsJob, _ctx: &JobContext) -> Result<(), JobFailure> {
        let n = self
            .users
            .forget_deletions(TOMBSTONE_RETENTION)
            .await
            .map_err(JobFailure::retry)?;
        if n > 0 {
            tracing::info!(forgotten = n, "old account deletion tombstones dropped");
        }
        Ok(())
    }
}

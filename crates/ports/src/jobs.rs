//! Background jobs: enqueueing them, and the handlers that run them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::{fmt, time::Duration};
use thiserror::Error;
use uuid::Uuid;

/// A job's id, assigned at enqueue time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub Uuid);

impl JobId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for JobId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(JobId)
    }
}

/// Deduplication: while a job with this key is pending, scheduled, running or
/// waiting to retry, enqueueing another with the same key is refused with
/// `Duplicate`. The key is released when the job completes, dies or is
/// deleted; `ttl` bounds how long it outlives the job's next due time (its
/// `run_at`, or its next retry) should the job be lost some other way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueKey {
    pub key: String,
    pub ttl: Duration,
}

/// A job to enqueue: a type name plus a versioned JSON payload, and options.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// The handler it runs under, e.g. `email:welcome`.
    pub kind: String,
    /// The payload's schema version, so handlers can read old payloads.
    pub version: u16,
    pub payload: serde_json::Value,
    pub queue: String,
    /// When to run it; `None` is now.
    pub run_at: Option<DateTime<Utc>>,
    /// Retries after the first attempt before the job is dead.
    pub max_retries: u32,
    /// How long one attempt may run before it is cancelled (and retried).
    pub timeout: Duration,
    pub unique: Option<UniqueKey>,
    /// The user whose data the job carries (a Firebase uid): when that user
    /// deletes their account, [`JobQueue::cancel_owned`] removes the job
    /// unless it is already running.
    pub owner: Option<String>,
}

impl NewJob {
    pub const DEFAULT_QUEUE: &'static str = "default";

    /// The job `payload` declares itself to be (kind, version, queue).
    pub fn of<J: Job>(payload: &J) -> Result<Self, serde_json::Error> {
        Ok(Self::new(J::KIND, J::VERSION, payload)?.on_queue(J::QUEUE))
    }
    pub const DEFAULT_MAX_RETRIES: u32 = 10;
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

    /// A job of `kind` carrying `payload` (schema `version`), to run now on the
    /// default queue.
    pub fn new<T: Serialize>(
        kind: &str,
        version: u16,
        payload: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            kind: kind.to_owned(),
            version,
            payload: serde_json::to_value(payload)?,
            queue: Self::DEFAULT_QUEUE.to_owned(),
            run_at: None,
            max_retries: Self::DEFAULT_MAX_RETRIES,
            timeout: Self::DEFAULT_TIMEOUT,
            unique: None,
            owner: None,
        })
    }

    pub fn on_queue(mut self, queue: &str) -> Self {
        queue.clone_into(&mut self.queue);
        self
    }

    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Tags the job with the user whose data it carries (see `owner`).
    pub fn owned_by(mut self, uid: impl Into<String>) -> Self {
        self.owner = Some(uid.into());
        self
    }

    pub fn unique(mut self, key: impl Into<String>, ttl: Duration) -> Self {
        self.unique = Some(UniqueKey {
            key: key.into(),
            ttl,
        });
        self
    }
}

#[derive(Debug, Error)]
pub enum EnqueueJobError {
    /// A job with the same unique key is still live.
    #[error("a job with unique key {key:?} is already queued")]
    Duplicate { key: String },
    /// The job itself is unacceptable (empty kind, unknown queue, ...).
    #[error("invalid job: {0}")]
    Invalid(String),
    #[error("job queue unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

/// Where jobs go to be run later, by some worker.
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Enqueues `job` atomically: it is either stored whole (with its unique
    /// key) or not at all.
    ///
    /// MUST return `Duplicate` when its unique key is held by a live job,
    /// `Invalid` for an empty kind or queue name, and `Unavailable` when the
    /// queue's store cannot be reached.
    async fn enqueue(&self, job: NewJob) -> Result<JobId, EnqueueJobError>;

    /// Removes every job tagged with `owner` (see [`NewJob::owned_by`])
    /// that is waiting (pending, scheduled, waiting to retry) or dead. A
    /// job already running is left to finish and counted in `running`; a
    /// later call removes it if it comes back to wait for a retry.
    /// Idempotent: a second call removes nothing more.
    async fn cancel_owned(&self, owner: &str) -> Result<CancelledJobs, CancelJobsError>;

    /// The jobs tagged with `owner` that the queue still holds (waiting,
    /// running, dead), with their payloads: what it stores about a user,
    /// for the user's data export.
    async fn owned_jobs(&self, owner: &str) -> Result<Vec<OwnedJob>, CancelJobsError>;
}

/// A job the queue holds for its owner (see [`JobQueue::owned_jobs`]).
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedJob {
    pub id: String,
    pub queue: String,
    pub kind: String,
    /// `pending`, `scheduled`, `active`, `retry` or `dead`.
    pub state: String,
    pub payload: serde_json::Value,
}

/// What [`JobQueue::cancel_owned`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CancelledJobs {
    pub cancelled: u64,
    pub running: u64,
}

#[derive(Debug, Error)]
pub enum CancelJobsError {
    #[error("job queue unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

/// What a handler is given: one attempt of one job.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub id: JobId,
    pub kind: String,
    pub version: u16,
    pub payload: serde_json::Value,
    pub queue: String,
    /// 1 on the first attempt.
    pub attempt: u32,
    pub max_retries: u32,
    /// The fencing number of this attempt's lease: larger for every later
    /// fetch of the job, so a handler can tell its own claims from those of
    /// an earlier attempt whose worker died (see `SendHolder`).
    pub lease: u64,
}

impl JobContext {
    /// Deserializes the payload; a payload that does not fit is a permanent
    /// failure (retrying cannot fix it).
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, JobFailure> {
        serde_json::from_value(self.payload.clone()).map_err(|e| JobFailure::Permanent {
            error: format!(
                "payload of {} v{} does not decode: {e}",
                self.kind, self.version
            ),
        })
    }
}

/// Why an attempt failed, and what the queue should do about it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JobFailure {
    /// Retry with backoff, and no earlier than `after` if given, until the
    /// job's retries run out, then dead.
    #[error("{error}")]
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Do not retry: the job goes straight to the dead set.
    #[error("{error}")]
    Permanent { error: String },
}

impl JobFailure {
    pub fn retry(error: impl fmt::Display) -> Self {
        JobFailure::Retry {
            error: error.to_string(),
            after: None,
        }
    }

    pub fn permanent(error: impl fmt::Display) -> Self {
        JobFailure::Permanent {
            error: error.to_string(),
        }
    }
}

/// Runs jobs of one kind. Delivery is at-least-once (a worker may die after
/// the work but before the acknowledgement), so handlers MUST be idempotent
/// where a repeat would be visible. Most handlers implement [`HandleJob`]
/// instead, which decodes a typed payload for them.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    async fn handle(&self, job: &JobContext) -> Result<(), JobFailure>;
}

/// A job's payload that declares what it is: the handler it runs under,
/// the queue it runs on, and the version of its schema. Enqueue one with
/// [`NewJob::of`]; run it with a [`HandleJob`].
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The handler's name, e.g. `email:welcome`. Stable: queued jobs carry it.
    const KIND: &'static str;
    /// The queue it runs on (a worker runs only the queues it is given).
    const QUEUE: &'static str = NewJob::DEFAULT_QUEUE;
    /// The payload's schema version; raise it when the shape changes.
    const VERSION: u16;

    /// The payload of a job enqueued under `version`. The default accepts
    /// this version and older ones that still decode, and refuses newer
    /// ones for good (a newer worker wrote them). `Ok(None)`: an old job
    /// this version no longer runs; it completes without running.
    fn decode(version: u16, payload: &serde_json::Value) -> Result<Option<Self>, JobFailure> {
        if version > Self::VERSION {
            return Err(JobFailure::permanent(format!(
                "payload version {version} of {} is newer than this worker ({})",
                Self::KIND,
                Self::VERSION
            )));
        }
        serde_json::from_value(payload.clone())
            .map(Some)
            .map_err(|e| {
                JobFailure::permanent(format!(
                    "payload of {} v{version} does not decode: {e}",
                    Self::KIND
                ))
            })
    }
}

/// Runs the jobs of one [`Job`] type: the worker decodes the payload and
/// calls `run`. Register it with the worker by its type (the kind comes
/// from `Self::Job::KIND`, never a string paired by hand).
#[async_trait]
pub trait HandleJob: Send + Sync + 'static {
    type Job: Job;

    async fn run(&self, job: Self::Job, ctx: &JobContext) -> Result<(), JobFailure>;
}

/// A [`HandleJob`] as the untyped [`JobHandler`] a worker runs.
#[derive(Debug)]
pub struct Typed<H>(pub std::sync::Arc<H>);

#[async_trait]
impl<H: HandleJob> JobHandler for Typed<H> {
    async fn handle(&self, ctx: &JobContext) -> Result<(), JobFailure> {
        match H::Job::decode(ctx.version, &ctx.payload)? {
            Some(job) => self.0.run(job, ctx).await,
            None => {
                tracing::warn!(job_id = %ctx.id, kind = %ctx.kind, version = ctx.version,
                    "a job of a version this worker no longer runs; completing it unrun");
                Ok(())
            }
        }
    }
}

//! What the queue hands out and reports: leases, outcomes, counts.

use super::*;

/// Proof that a worker holds a job's lease: the job and the fencing number
/// FETCH gave this lease. Every state change a worker makes carries it; one
/// whose lease has since been recovered (or fetched again) changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    pub id: JobId,
    /// Increases every time the job is fetched.
    pub token: u64,
}

/// What a state change made by a lease holder did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The change was made.
    Applied,
    /// The lease had been recovered, the job fetched again or deleted:
    /// nothing changed. Not an error; the job is someone else's now.
    LeaseLost,
}

/// What recording a failed attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// The job waits in the retry set.
    Retry,
    /// The job is in the dead set.
    Dead,
    /// The lease was lost: nothing changed.
    LeaseLost,
}

/// A job a worker holds a lease on.
#[derive(Debug, Clone)]
pub struct LeasedJob {
    pub id: JobId,
    /// This lease's fencing number (see [`Lease`]).
    pub token: u64,
    pub queue: String,
    pub kind: String,
    pub version: u16,
    pub payload: serde_json::Value,
    /// This attempt's number (1 for the first).
    pub attempt: u32,
    pub max_retries: u32,
    pub timeout: Duration,
    /// When it became ready to run (ms since the epoch).
    pub ready_at_ms: i64,
}

impl LeasedJob {
    /// The lease to present when changing this job's state.
    pub fn lease(&self) -> Lease {
        Lease {
            id: self.id,
            token: self.token,
        }
    }
}

/// A job in the dead set.
#[derive(Debug, Clone, Serialize)]
pub struct DeadJob {
    pub id: String,
    pub queue: String,
    pub kind: String,
    pub attempts: u32,
    pub last_error: String,
    pub died_at_ms: i64,
    pub payload: String,
}

/// What enqueueing a periodic tick did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickOutcome {
    /// The tick's job was enqueued.
    Enqueued(JobId),
    /// This tick had already been enqueued (by this or another process).
    AlreadyEnqueued,
}

/// What a fetch leased, and what held the queue's jobs back.
#[derive(Debug, Clone)]
pub struct FetchedBatch {
    pub jobs: Vec<LeasedJob>,
    pub held_back: Option<HeldBack>,
}

/// Why a fetch leased fewer jobs than it asked for although jobs wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldBack {
    /// The queue is paused.
    Paused,
    /// The queue's concurrency cap is reached across all workers.
    AtCapacity,
    /// The queue's rate limit allows the next job after this long.
    RateLimited(Duration),
}

pub use ports::admin::{
    JobDetail, JobPage, JobState, JobSummary, QueueControls, QueueStats, RateLimit,
};

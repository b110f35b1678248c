#![doc = include_str!("../README.md")]

mod leases;
mod periodic;
mod queue;
mod redis;
mod scripts;
mod worker;

pub use deadpool_redis::Pool as RedisPool;
pub use queue::{
    DeadJob, FailOutcome, FetchedBatch, HeldBack, JobPage, JobState, JobSummary, Lease,
    LeaseOutcome, LeasedJob, MAX_PAGE, QueueControls, QueueError, QueueSettings, QueueStats,
    RateLimit, RedisJobQueue, TickOutcome, valid_queue_name,
};
pub use redis::{RedisHealthProbe, RedisSettings, build_pool};
pub use worker::{JobWorker, WorkerSettings, backoff};

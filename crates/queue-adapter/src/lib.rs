#![doc = include_str!("../README.md")]

mod leases;
mod periodic;
mod queue;
mod redis;
mod scripts;
mod worker;

pub use queue::{
    DeadJob, FailOutcome, FetchedBatch, HeldBack, JobDetail, JobPage, JobState, JobSummary, Lease,
    LeaseOutcome, LeasedJob, MAX_PAGE, QueueControls, QueueError, QueueSettings, QueueStats,
    RateLimit, RedisJobQueue, TickOutcome, valid_queue_name,
};
pub use redis::{
    ClusterPool, PoolError, RedisHealthProbe, RedisPool, RedisSettings, SentinelManager,
    SentinelUrl, build_pool, cluster_nodes, sentinel_parts,
};
pub use worker::{JobWorker, WorkerSettings, backoff};

//! The worker runtime: fetches jobs by weighted priority, runs them with
//! bounded concurrency under a lease that a heartbeat extends, retries
//! failures with exponential backoff and jitter, recovers jobs of dead
//! workers, and on shutdown returns unfinished jobs to the queue. Every
//! state change carries the job's lease (see `leases.rs`), so a worker whose
//! lease was lost cannot touch the job's next run.
//!
//! # Layout
//!
//! - this file: settings, registering handlers, `run` and the drain;
//! - `fetch.rs`: the fetch loop;
//! - `execute.rs`: one attempt and the recording of its outcome;
//! - `loops.rs`: the background loops (forward, recover, heartbeat, stats,
//!   periodic ticks).

mod execute;
mod fetch;
mod loops;

use crate::leases::{Held, HeldLease};
use crate::periodic::Periodic;
use crate::queue::{
    FailOutcome, HeldBack, LeaseOutcome, LeasedJob, QueueError, RedisJobQueue, now_ms,
};
use futures_util::FutureExt as _;
use ports::{HandleJob, Job, JobContext, JobFailure, JobHandler, JobId, NewJob, Typed};
use rand::Rng as _;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How a worker process runs jobs. `new` gives production defaults.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Unique per process (logs and metrics).
    pub worker_id: String,
    /// Queues and their weights: a queue of weight 6 is tried first six times
    /// as often as one of weight 1, and every queue makes progress.
    pub queues: Vec<(String, u32)>,
    /// Jobs run at once by this process.
    pub concurrency: usize,
    /// How long a job is leased; a heartbeat extends it every third of it.
    pub lease: Duration,
    /// Longest idle wait for a wake-up token before polling again.
    pub idle_wait: Duration,
    /// How often due scheduled and retry jobs are moved to pending.
    pub forward_every: Duration,
    /// How often expired leases are recovered (and the dead set capped).
    pub recover_every: Duration,
    /// First retry delay; doubles per attempt up to `retry_cap`, with jitter.
    /// Also applies to jobs recovered from an expired lease.
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// How long in-flight jobs may run on after shutdown; the rest are requeued.
    pub shutdown_timeout: Duration,
    pub stats_every: Duration,
}

impl WorkerSettings {
    pub fn new(worker_id: impl Into<String>, queues: Vec<(String, u32)>) -> Self {
        Self {
            worker_id: worker_id.into(),
            queues,
            concurrency: 16,
            lease: Duration::from_secs(30),
            idle_wait: Duration::from_secs(1),
            forward_every: Duration::from_millis(250),
            recover_every: Duration::from_secs(5),
            retry_base: Duration::from_secs(2),
            retry_cap: Duration::from_secs(3600),
            shutdown_timeout: Duration::from_secs(20),
            stats_every: Duration::from_secs(5),
        }
    }
}

/// The delay before retry `attempt` (1-based): `base * 2^(attempt-1)`, capped,
/// with "equal jitter" (a random point in the upper half).
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base
        .saturating_mul(2_u32.saturating_pow(attempt.saturating_sub(1).min(30)))
        .min(cap);
    let half = exp / 2;
    half + Duration::from_millis(
        rand::rng().random_range(0..=u64::try_from(half.as_millis()).unwrap_or(u64::MAX)),
    )
}

/// Most jobs leased in one round trip.
const FETCH_BATCH: usize = 32;

/// How long interrupted jobs get to return themselves to the queue at
/// shutdown before their tasks are aborted (their leases then expire).
const REQUEUE_DEADLINE: Duration = Duration::from_secs(5);

/// A job whose handler succeeded, waiting for the completer to persist it.
/// It keeps its lease (heartbeated) and its concurrency slot until then, so
/// a done-but-unsaved job is never recovered while the completer retries,
/// and the jobs a process holds never exceed its concurrency.
struct Completed {
    queue: String,
    held: HeldLease,
    _permit: OwnedSemaphorePermit,
}

/// What one job's task needs.
struct Shared {
    queue: RedisJobQueue,
    handlers: HashMap<String, Arc<dyn JobHandler>>,
    settings: Arc<WorkerSettings>,
    done: mpsc::UnboundedSender<Completed>,
    /// Cancelled when the shutdown deadline passes: running handlers stop
    /// and their jobs go back to the queue.
    interrupt: CancellationToken,
}

/// A worker process's job runtime. Register handlers, then `run`.
pub struct JobWorker {
    queue: RedisJobQueue,
    handlers: HashMap<String, Arc<dyn JobHandler>>,
    periodic: Vec<Periodic>,
    settings: WorkerSettings,
}

impl std::fmt::Debug for JobWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobWorker")
            .field("settings", &self.settings)
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl JobWorker {
    pub fn new(queue: RedisJobQueue, settings: WorkerSettings) -> Self {
        Self {
            queue,
            handlers: HashMap::new(),
            periodic: Vec::new(),
            settings,
        }
    }

    /// Runs jobs of `kind` with `handler` (an untyped handler; prefer
    /// [`register`](Self::register)).
    pub fn handle(&mut self, kind: &str, handler: Arc<dyn JobHandler>) -> &mut Self {
        self.handlers.insert(kind.to_owned(), handler);
        self
    }

    /// Runs the jobs of `H::Job` (its `KIND`) with `handler`. Warns when
    /// the job's queue is not one this worker takes jobs from: such jobs
    /// would wait for another worker.
    pub fn register<H: HandleJob>(&mut self, handler: Arc<H>) -> &mut Self {
        let queue = <H::Job as Job>::QUEUE;
        if !self.settings.queues.iter().any(|(q, _)| q == queue) {
            tracing::warn!(
                kind = <H::Job as Job>::KIND,
                queue,
                "this worker takes no jobs from the queue this job runs on"
            );
        }
        self.handle(<H::Job as Job>::KIND, Arc::new(Typed(handler)))
    }

    /// Enqueues the job `J` with `payload` on every tick of `schedule`
    /// (see [`periodic`](Self::periodic)), named by its kind.
    pub fn every<J: Job>(&mut self, schedule: &str, payload: &J) -> anyhow::Result<&mut Self> {
        self.periodic(J::KIND, schedule, NewJob::of(payload)?)
    }

    /// Enqueues `job` on every tick of `schedule` (a cron expression with
    /// seconds: `sec min hour day month weekday`), once per tick however many
    /// worker processes run.
    pub fn periodic(
        &mut self,
        name: &str,
        schedule: &str,
        job: NewJob,
    ) -> anyhow::Result<&mut Self> {
        self.periodic.push(Periodic::new(name, schedule, job)?);
        Ok(self)
    }

    /// Runs until `shutdown` is cancelled, then drains (see [`WorkerSettings::shutdown_timeout`]).
    pub async fn run(self, shutdown: CancellationToken) {
        let Self {
            queue,
            handlers,
            periodic,
            settings,
        } = self;
        let settings = Arc::new(settings);
        let held = Held::default();
        let background = CancellationToken::new();
        let mut loops = loops::start(&queue, &settings, &held, periodic, &background);
        tracing::info!(worker = %settings.worker_id, queues = ?settings.queues, concurrency = settings.concurrency, "job worker started");

        // Completions are recorded in batches by one task: far fewer round
        // trips than one per job when the queue is busy.
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Completed>();
        let completer_task = tokio::spawn(execute::completer(queue.clone(), done_rx));
        let shared = Arc::new(Shared {
            queue: queue.clone(),
            handlers,
            settings: settings.clone(),
            done: done_tx,
            interrupt: CancellationToken::new(),
        });
        let mut tasks = JoinSet::new();
        fetch::fetch_loop(&shared, &held, &mut tasks, &shutdown).await;
        drain(&shared, &mut tasks).await;
        // The completer stops once the last sender (in `shared`) is gone,
        // after persisting what it was given.
        drop(shared);
        let _ = completer_task.await;
        background.cancel();
        while loops.join_next().await.is_some() {}
        tracing::info!(worker = %settings.worker_id, "job worker stopped");
    }
}

/// Lets in-flight jobs finish up to the deadline; then interrupts the rest,
/// which return themselves to the queue under their lease.
async fn drain(shared: &Shared, tasks: &mut JoinSet<()>) {
    let deadline = shared.settings.shutdown_timeout;
    let in_flight = tasks.len();
    if in_flight > 0 {
        tracing::info!(
            in_flight,
            deadline_secs = deadline.as_secs(),
            "job worker draining"
        );
    }
    let drained = tokio::time::timeout(deadline, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_ok() {
        return;
    }
    shared.interrupt.cancel();
    let requeued = tokio::time::timeout(REQUEUE_DEADLINE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if requeued.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "jobs not requeued in time; they run again when their leases end"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::execute::completer;
    use super::fetch::weighted_order;
    use super::*;
    use crate::queue::{Lease, QueueSettings};

    #[tokio::test]
    async fn a_finished_job_keeps_its_lease_and_slot_until_its_completion_is_persisted() {
        // Nothing listens on port 1: every completion attempt fails and the
        // completer retries for a while before giving up.
        let pool = crate::build_pool(&crate::RedisSettings::new("redis://127.0.0.1:1")).unwrap();
        let queue = RedisJobQueue::new(pool, QueueSettings::new("unreachable:"));
        let held = Held::default();
        let slots = Arc::new(Semaphore::new(1));
        let lease = Lease {
            id: JobId::new(),
            token: 1,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(completer(queue, rx));
        let sent = tx.send(Completed {
            queue: "default".into(),
            held: held.hold("default", lease),
            _permit: slots.clone().try_acquire_owned().unwrap(),
        });
        assert!(sent.is_ok());
        drop(tx);
        let started = Instant::now();
        while !task.is_finished() {
            assert_eq!(
                held.by_queue().get("default").map(Vec::len),
                Some(1),
                "still heartbeated while the completion is unsaved"
            );
            assert_eq!(slots.available_permits(), 0, "still holds its slot");
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "completer hung"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "the completer retried before giving up"
        );
        assert!(held.by_queue().is_empty(), "released once given up on");
        assert_eq!(slots.available_permits(), 1);
    }

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let base = Duration::from_secs(2);
        let cap = Duration::from_secs(60);
        for _ in 0..100 {
            let d1 = backoff(1, base, cap);
            assert!(
                d1 >= Duration::from_secs(1) && d1 <= Duration::from_secs(2),
                "{d1:?}"
            );
            let d3 = backoff(3, base, cap);
            assert!(
                d3 >= Duration::from_secs(4) && d3 <= Duration::from_secs(8),
                "{d3:?}"
            );
            let d20 = backoff(20, base, cap);
            assert!(d20 >= Duration::from_secs(30) && d20 <= cap, "{d20:?}");
        }
    }

    #[test]
    fn weighted_order_favours_heavy_queues_but_lists_all() {
        let queues = vec![
            ("critical".to_owned(), 6),
            ("default".to_owned(), 3),
            ("low".to_owned(), 1),
        ];
        let mut first = HashMap::new();
        for _ in 0..10_000 {
            let order = weighted_order(&queues);
            assert_eq!(order.len(), 3);
            *first.entry(order[0]).or_insert(0) += 1;
        }
        let (c, d, l) = (first["critical"], first["default"], first["low"]);
        assert!(c > d && d > l && l > 500, "{first:?}");
    }
}

//! The worker runtime: fetches jobs by weighted priority, runs them with
//! bounded concurrency under a lease that a heartbeat extends, retries
//! failures with exponential backoff and jitter, recovers jobs of dead
//! workers, and on shutdown returns unfinished jobs to the queue. Every
//! state change carries the job's lease (see `leases.rs`), so a worker whose
//! lease was lost cannot touch the job's next run.

use crate::leases::{Held, HeldLease};
use crate::periodic::Periodic;
use crate::queue::{FailOutcome, LeaseOutcome, LeasedJob, QueueError, RedisJobQueue, now_ms};
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

/// The queues in the order to try them this time: a weighted random shuffle.
fn weighted_order(queues: &[(String, u32)]) -> Vec<&str> {
    let mut pool: Vec<(&str, u32)> = queues
        .iter()
        .map(|(q, w)| (q.as_str(), (*w).max(1)))
        .collect();
    let mut order = Vec::with_capacity(pool.len());
    let mut rng = rand::rng();
    while !pool.is_empty() {
        let total: u32 = pool.iter().map(|(_, w)| w).sum();
        let mut pick = rng.random_range(0..total);
        let i = pool
            .iter()
            .position(|(_, w)| {
                if pick < *w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .unwrap_or(0);
        order.push(pool.remove(i).0);
    }
    order
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Retries a queue state change a few times: losing one only means the job
/// runs again when its lease ends, but we would rather not.
async fn persist<T, F, Fut>(what: &str, id: &JobId, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, QueueError>>,
{
    let mut wait = Duration::from_millis(50);
    for attempt in 1..=5 {
        match f().await {
            Ok(v) => return Some(v),
            Err(e) if attempt < 5 => {
                tracing::debug!(job_id = %id, error = %e, "retrying {what}");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => {
                tracing::warn!(job_id = %id, error = %e, "could not record {what}; the job will run again when its lease ends")
            }
        }
    }
    None
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
        let mut loops = JoinSet::new();
        loops.spawn(forwarder(
            queue.clone(),
            settings.clone(),
            background.clone(),
        ));
        loops.spawn(recoverer(
            queue.clone(),
            settings.clone(),
            background.clone(),
        ));
        loops.spawn(crate::leases::heartbeat(
            queue.clone(),
            settings.lease,
            held.clone(),
            background.clone(),
        ));
        loops.spawn(stats(queue.clone(), settings.clone(), background.clone()));
        if !periodic.is_empty() {
            loops.spawn(crate::periodic::scheduler(
                queue.clone(),
                periodic,
                background.clone(),
            ));
        }
        tracing::info!(worker = %settings.worker_id, queues = ?settings.queues, concurrency = settings.concurrency, "job worker started");

        // Completions are recorded in batches by one task: far fewer round
        // trips than one per job when the queue is busy.
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Completed>();
        let completer_task = tokio::spawn(completer(queue.clone(), done_rx));
        let shared = Arc::new(Shared {
            queue: queue.clone(),
            handlers,
            settings: settings.clone(),
            done: done_tx,
            interrupt: CancellationToken::new(),
        });
        let semaphore = Arc::new(Semaphore::new(settings.concurrency.max(1)));
        let queue_names: Vec<String> = settings.queues.iter().map(|(q, _)| q.clone()).collect();
        let mut tasks = JoinSet::new();
        let mut failing_since: Option<Instant> = None;
        let mut backoff_wait = Duration::from_millis(100);
        loop {
            while tasks.try_join_next().is_some() {}
            let first = tokio::select! {
                p = semaphore.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                () = shutdown.cancelled() => break,
            };
            // Take every free slot (up to a batch) and fill them in one round trip.
            let mut permits = vec![first];
            while permits.len() < FETCH_BATCH {
                match semaphore.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            let mut jobs = Vec::new();
            let mut fetch_error = None;
            for q in weighted_order(&settings.queues) {
                match queue
                    .fetch_many(q, settings.lease, permits.len() - jobs.len())
                    .await
                {
                    Ok(mut got) => jobs.append(&mut got),
                    Err(e) => fetch_error = Some(e),
                }
                if jobs.len() == permits.len() {
                    break;
                }
            }
            let fetched = match (jobs.is_empty(), fetch_error) {
                (true, Some(e)) => Err(e),
                (true, None) => Ok(None),
                (false, _) => Ok(Some(jobs)),
            };
            match fetched {
                Ok(Some(jobs)) => {
                    if let Some(since) = failing_since.take() {
                        tracing::info!(
                            down_for_ms = since.elapsed().as_millis() as u64,
                            "job worker reached Redis again"
                        );
                    }
                    backoff_wait = Duration::from_millis(100);
                    for (job, permit) in jobs.into_iter().zip(permits) {
                        // Held from here until the outcome is persisted; the
                        // guard lets go on every path, a panic included.
                        let lease = held.hold(&job.queue, job.lease());
                        let shared = shared.clone();
                        tasks.spawn(async move {
                            let id = job.id;
                            let run = execute(&shared, job, lease, permit);
                            if let Err(panic) = AssertUnwindSafe(run).catch_unwind().await {
                                tracing::error!(job_id = %id, panic = %panic_message(&*panic), "job task panicked outside its handler; the job runs again when its lease ends");
                            }
                        });
                    }
                }
                Ok(None) => {
                    drop(permits);
                    tokio::select! {
                        r = queue.wait_for_work(&queue_names, settings.idle_wait) => {
                            if r.is_err() {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                        () = shutdown.cancelled() => break,
                    }
                }
                Err(e) => {
                    drop(permits);
                    if failing_since.is_none() {
                        failing_since = Some(Instant::now());
                        tracing::warn!(error = %e, "job worker cannot fetch; backing off");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff_wait) => {}
                        () = shutdown.cancelled() => break,
                    }
                    backoff_wait = (backoff_wait * 2).min(Duration::from_secs(5));
                }
            }
        }

        // Drain: let in-flight jobs finish up to the deadline; then interrupt
        // the rest, which return themselves to the queue under their lease.
        let in_flight = tasks.len();
        if in_flight > 0 {
            tracing::info!(
                in_flight,
                deadline_secs = settings.shutdown_timeout.as_secs(),
                "job worker draining"
            );
        }
        let drained = tokio::time::timeout(settings.shutdown_timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
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
        // The completer stops once the last sender (in `shared`) is gone,
        // after persisting what it was given.
        drop(shared);
        let _ = completer_task.await;
        background.cancel();
        while loops.join_next().await.is_some() {}
        tracing::info!(worker = %settings.worker_id, "job worker stopped");
    }
}

/// How one attempt ended, before its outcome is recorded.
enum Ran {
    Finished(Result<(), JobFailure>),
    /// A heartbeat found the lease lost; the handler was dropped.
    LeaseLost,
    /// Shutdown's deadline passed; the handler was dropped.
    Interrupted,
}

/// Runs one attempt and records its outcome under its lease.
async fn execute(shared: &Shared, job: LeasedJob, held: HeldLease, permit: OwnedSemaphorePermit) {
    let (queue, settings) = (&shared.queue, &shared.settings);
    let lease = held.lease();
    let labels = [("queue", job.queue.clone()), ("kind", job.kind.clone())];
    if job.ready_at_ms > 0 {
        let waited = (now_ms() - job.ready_at_ms).max(0) as f64 / 1000.0;
        metrics::histogram!("job_wait_seconds", &labels).record(waited);
    }
    let started = Instant::now();
    let timeout = if job.timeout.is_zero() {
        NewJob::DEFAULT_TIMEOUT
    } else {
        job.timeout
    };
    let ran = match shared.handlers.get(&job.kind) {
        // A newer worker may know it (rolling deploys): retry, do not kill.
        None => Ran::Finished(Err(JobFailure::retry(format!(
            "no handler for job type {:?} on this worker",
            job.kind
        )))),
        Some(handler) => {
            let ctx = JobContext {
                id: job.id,
                kind: job.kind.clone(),
                version: job.version,
                payload: job.payload.clone(),
                queue: job.queue.clone(),
                attempt: job.attempt,
                max_retries: job.max_retries,
                lease: job.token,
            };
            let attempt = tokio::time::timeout(
                timeout,
                AssertUnwindSafe(handler.handle(&ctx)).catch_unwind(),
            );
            // Losing the select drops the handler's future: that cancels it.
            tokio::select! {
                biased;
                () = held.lost().cancelled() => Ran::LeaseLost,
                () = shared.interrupt.cancelled() => Ran::Interrupted,
                r = attempt => Ran::Finished(match r {
                    Ok(Ok(result)) => result,
                    Ok(Err(panic)) => Err(JobFailure::retry(format!(
                        "the handler panicked: {}",
                        panic_message(&*panic)
                    ))),
                    Err(_) => Err(JobFailure::retry(format!("timed out after {timeout:?}"))),
                }),
            }
        }
    };
    held.finished();
    metrics::histogram!("job_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    let result = match ran {
        // Already reported by the heartbeat; the job is someone else's now.
        Ran::LeaseLost => "lease_lost",
        Ran::Interrupted => {
            match persist("requeue", &job.id, || queue.requeue(&job.queue, lease)).await {
                Some(LeaseOutcome::Applied) => {
                    tracing::info!(job_id = %job.id, queue = %job.queue, "unfinished job returned to the queue");
                }
                Some(LeaseOutcome::LeaseLost) => {
                    tracing::debug!(job_id = %job.id, "not requeued: its lease was lost");
                }
                None => {}
            }
            "requeued"
        }
        Ran::Finished(Ok(())) => {
            tracing::debug!(job_id = %job.id, kind = %job.kind, "job done");
            let done = Completed {
                queue: job.queue.clone(),
                held,
                _permit: permit,
            };
            if let Err(mpsc::error::SendError(done)) = shared.done.send(done) {
                let lease = done.held.lease();
                let outcome =
                    persist("completion", &job.id, || queue.complete(&done.queue, lease)).await;
                if outcome == Some(LeaseOutcome::LeaseLost) {
                    completed_after_lease_lost(&done.queue, &lease.id);
                }
            }
            "success"
        }
        Ran::Finished(Err(failure)) => {
            let (error, retry_after) = match &failure {
                JobFailure::Permanent { error } => (error.clone(), None),
                JobFailure::Retry { error, .. } if job.attempt > job.max_retries => {
                    (error.clone(), None)
                }
                JobFailure::Retry { error, after } => {
                    // Backoff, but never sooner than the handler asked
                    // (a provider's Retry-After, say).
                    let backoff = backoff(job.attempt, settings.retry_base, settings.retry_cap);
                    (
                        error.clone(),
                        Some(after.map_or(backoff, |a| a.max(backoff))),
                    )
                }
            };
            let outcome = persist("failure", &job.id, || {
                queue.fail(&job.queue, lease, &error, retry_after)
            })
            .await;
            match outcome {
                Some(FailOutcome::LeaseLost) => {
                    metrics::counter!("jobs_lease_lost_total", "queue" => job.queue.clone(), "stage" => "fail").increment(1);
                    tracing::warn!(job_id = %job.id, kind = %job.kind, attempt = job.attempt, error = %error, "job failed after its lease was lost; the failure is not recorded");
                    "lease_lost"
                }
                // Dead, or not recorded (the lease then ends and the
                // recoverer decides); reported as what was asked.
                _ if retry_after.is_none() => {
                    tracing::error!(job_id = %job.id, kind = %job.kind, attempt = job.attempt, error = %error, "job failed for good; moved to the dead set");
                    "dead"
                }
                _ => {
                    tracing::warn!(job_id = %job.id, kind = %job.kind, attempt = job.attempt, error = %error, "job failed; will retry");
                    "retry"
                }
            }
        }
    };
    metrics::counter!("jobs_processed_total", "queue" => job.queue, "kind" => job.kind, "outcome" => result).increment(1);
}

/// A completion arrived after the job's lease was recovered: the work was
/// done, but the job runs (or ran) again elsewhere. Counted, not an error.
fn completed_after_lease_lost(queue: &str, id: &JobId) {
    metrics::counter!("jobs_lease_lost_total", "queue" => queue.to_owned(), "stage" => "complete")
        .increment(1);
    tracing::warn!(job_id = %id, queue = %queue, "job finished after its lease was lost; it may run again");
}

/// Records completions in batches until every sender is gone. Each job
/// keeps its lease and slot until its batch is persisted (or given up on).
async fn completer(queue: RedisJobQueue, mut done: mpsc::UnboundedReceiver<Completed>) {
    while let Some(first) = done.recv().await {
        let mut by_queue: HashMap<String, Vec<Completed>> = HashMap::new();
        by_queue.entry(first.queue.clone()).or_default().push(first);
        let mut n = 1;
        while n < 512 {
            match done.try_recv() {
                Ok(c) => {
                    by_queue.entry(c.queue.clone()).or_default().push(c);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        for (q, batch) in by_queue {
            let leases: Vec<_> = batch.iter().map(|c| c.held.lease()).collect();
            let Some(first) = leases.first() else {
                continue;
            };
            if let Some(outcomes) =
                persist("completion", &first.id, || queue.complete_many(&q, &leases)).await
            {
                for (lease, outcome) in leases.iter().zip(outcomes) {
                    if outcome == LeaseOutcome::LeaseLost {
                        completed_after_lease_lost(&q, &lease.id);
                    }
                }
            }
            // Dropping the batch releases the leases' heartbeats and slots.
            drop(batch);
        }
    }
}

async fn every(period: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(period) => true,
        () = stop.cancelled() => false,
    }
}

async fn forwarder(queue: RedisJobQueue, settings: Arc<WorkerSettings>, stop: CancellationToken) {
    while every(settings.forward_every, &stop).await {
        for (q, _) in &settings.queues {
            if let Err(e) = queue.forward(q).await {
                tracing::debug!(queue = %q, error = %e, "forwarding scheduled jobs failed");
            }
        }
    }
}

async fn recoverer(queue: RedisJobQueue, settings: Arc<WorkerSettings>, stop: CancellationToken) {
    while every(settings.recover_every, &stop).await {
        for (q, _) in &settings.queues {
            match queue
                .recover(q, settings.retry_base, settings.retry_cap)
                .await
            {
                Ok((0, 0)) => {}
                Ok((retried, dead)) => {
                    tracing::warn!(queue = %q, retried, dead, "recovered jobs whose worker stopped responding");
                    metrics::counter!("jobs_recovered_total", "queue" => q.clone())
                        .increment(retried + dead);
                }
                Err(e) => {
                    tracing::debug!(queue = %q, error = %e, "recovering expired leases failed")
                }
            }
        }
    }
}

async fn stats(queue: RedisJobQueue, settings: Arc<WorkerSettings>, stop: CancellationToken) {
    while every(settings.stats_every, &stop).await {
        for (q, _) in &settings.queues {
            if let Ok(s) = queue.stats(q).await {
                for (state, n) in [
                    ("pending", s.pending),
                    ("scheduled", s.scheduled),
                    ("active", s.active),
                    ("retry", s.retry),
                    ("dead", s.dead),
                ] {
                    metrics::gauge!("queue_jobs", "queue" => q.clone(), "state" => state)
                        .set(n as f64);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
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

//! What every queue test shares: a queue on its own key prefix, workers
//! started and stopped, scripted handlers, and a look at the raw keys.

pub(crate) use async_trait::async_trait;
pub(crate) use chrono::Utc;
pub(crate) use ports::{EnqueueJobError, JobContext, JobFailure, JobHandler, JobQueue, NewJob};
pub(crate) use ports_testing::contract::eventually;
pub(crate) use queue_adapter::{
    FailOutcome, JobWorker, LeaseOutcome, QueueSettings, RedisJobQueue, RedisSettings, TickOutcome,
    WorkerSettings,
};
pub(crate) use redis::AsyncCommands as _;
pub(crate) use std::collections::HashMap;
pub(crate) use std::sync::atomic::{AtomicUsize, Ordering};
pub(crate) use std::sync::{Arc, Mutex};
pub(crate) use std::time::{Duration, Instant};
pub(crate) use test_support::TestRedis;
pub(crate) use tokio_util::sync::CancellationToken;

pub(crate) fn queue(redis: &TestRedis) -> RedisJobQueue {
    let pool = queue_adapter::build_pool(&RedisSettings::new(redis.url())).unwrap();
    RedisJobQueue::new(pool, QueueSettings::new(redis.prefix()))
}

pub(crate) fn settings(queues: &[(&str, u32)]) -> WorkerSettings {
    WorkerSettings {
        concurrency: 8,
        lease: Duration::from_millis(900),
        idle_wait: Duration::from_millis(200),
        forward_every: Duration::from_millis(50),
        recover_every: Duration::from_millis(150),
        retry_base: Duration::from_millis(40),
        retry_cap: Duration::from_millis(200),
        shutdown_timeout: Duration::from_secs(5),
        stats_every: Duration::from_millis(200),
        ..WorkerSettings::new(
            "test-worker",
            queues.iter().map(|(q, w)| ((*q).to_owned(), *w)).collect(),
        )
    }
}

/// What a test handler does on each attempt of a job (by payload `n`).
#[derive(Default)]
pub(crate) struct Script {
    pub(crate) runs: Mutex<Vec<(u64, u32, Instant)>>,
    pub(crate) fail_first: HashMap<u64, u32>,
    pub(crate) always_fail: bool,
    pub(crate) permanent: bool,
    pub(crate) panic_first: bool,
    pub(crate) sleep: Duration,
    pub(crate) running: AtomicUsize,
    pub(crate) max_running: AtomicUsize,
}

impl Script {
    pub(crate) fn runs(&self) -> Vec<(u64, u32, Instant)> {
        self.runs.lock().unwrap().clone()
    }
    pub(crate) fn done(&self) -> usize {
        self.runs().len()
    }
}

#[async_trait]
impl JobHandler for Script {
    async fn handle(&self, job: &JobContext) -> Result<(), JobFailure> {
        let n = job.payload["n"].as_u64().unwrap_or(0);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        // Counts down even when the future is dropped (a timeout cancels it).
        let guard = Leaving(&self.running);
        tokio::time::sleep(self.sleep).await;
        drop(guard);
        if self.panic_first && job.attempt == 1 {
            panic!("kaboom");
        }
        if self.permanent {
            return Err(JobFailure::permanent("bad payload"));
        }
        if self.always_fail || self.fail_first.get(&n).is_some_and(|k| job.attempt <= *k) {
            return Err(JobFailure::retry(format!(
                "boom on attempt {}",
                job.attempt
            )));
        }
        self.runs
            .lock()
            .unwrap()
            .push((n, job.attempt, Instant::now()));
        Ok(())
    }
}

pub(crate) struct Leaving<'a>(pub(crate) &'a AtomicUsize);

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) struct Running {
    pub(crate) stop: CancellationToken,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

pub(crate) fn start(
    q: &RedisJobQueue,
    s: WorkerSettings,
    kind: &str,
    handler: Arc<dyn JobHandler>,
) -> Running {
    let mut w = JobWorker::new(q.clone(), s);
    w.handle(kind, handler);
    let stop = CancellationToken::new();
    let token = stop.clone();
    Running {
        stop,
        task: tokio::spawn(async move { w.run(token).await }),
    }
}

pub(crate) fn job(n: u64) -> NewJob {
    NewJob::new("t", 1, &serde_json::json!({"n": n})).unwrap()
}

/// A job's hash, as stored.
pub(crate) async fn job_hash(redis: &TestRedis, id: &ports::JobId) -> HashMap<String, String> {
    let mut c = redis.connection().await;
    c.hgetall(format!("{}q:job:{id}", redis.prefix()))
        .await
        .unwrap()
}

/// The lease deadline of an active job.
pub(crate) async fn lease_deadline(redis: &TestRedis, id: &ports::JobId) -> Option<f64> {
    let mut c = redis.connection().await;
    c.zscore(
        format!("{}q:default:active", redis.prefix()),
        id.to_string(),
    )
    .await
    .unwrap()
}

/// Who holds unique key `key`, and for how much longer (ms; negative: no key).
pub(crate) async fn unique_holder(redis: &TestRedis, key: &str) -> (Option<String>, i64) {
    let mut c = redis.connection().await;
    let k = format!("{}q:unique:{key}", redis.prefix());
    let holder: Option<String> = c.get(&k).await.unwrap();
    let ttl: i64 = c.pttl(&k).await.unwrap();
    (holder, ttl)
}

/// Lets the lease of the job `fetch`ed from "default" run out and recovers
/// it to retry at once, as another worker's recoverer would.
pub(crate) async fn expire_and_recover(redis: &TestRedis, q: &RedisJobQueue, id: &ports::JobId) {
    eventually(
        "the lease to be recovered",
        Duration::from_secs(5),
        || async {
            let mut c = redis.connection().await;
            let active = format!("{}q:default:active", redis.prefix());
            let _: i64 = c.zadd(&active, id.to_string(), 0).await.unwrap();
            let recovered = q
                .recover("default", Duration::ZERO, Duration::ZERO)
                .await
                .unwrap();
            (recovered == (1, 0)).then_some(())
        },
    )
    .await;
}

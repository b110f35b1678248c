//! The job queue and worker runtime against a real Redis.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use async_trait::async_trait;
use chrono::Utc;
use ports::testing::contract::eventually;
use ports::{EnqueueJobError, JobContext, JobFailure, JobHandler, JobQueue, NewJob};
use queue_adapter::{
    FailOutcome, JobWorker, LeaseOutcome, QueueSettings, RedisJobQueue, RedisSettings, TickOutcome,
    WorkerSettings,
};
use redis::AsyncCommands as _;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use test_support::TestRedis;
use tokio_util::sync::CancellationToken;

fn queue(redis: &TestRedis) -> RedisJobQueue {
    let pool = queue_adapter::build_pool(&RedisSettings::new(redis.url())).unwrap();
    RedisJobQueue::new(pool, QueueSettings::new(redis.prefix()))
}

fn settings(queues: &[(&str, u32)]) -> WorkerSettings {
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
struct Script {
    runs: Mutex<Vec<(u64, u32, Instant)>>,
    fail_first: HashMap<u64, u32>,
    always_fail: bool,
    permanent: bool,
    panic_first: bool,
    sleep: Duration,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

impl Script {
    fn runs(&self) -> Vec<(u64, u32, Instant)> {
        self.runs.lock().unwrap().clone()
    }
    fn done(&self) -> usize {
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

struct Leaving<'a>(&'a AtomicUsize);

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

fn start(
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

fn job(n: u64) -> NewJob {
    NewJob::new("t", 1, &serde_json::json!({"n": n})).unwrap()
}

/// A job's hash, as stored.
async fn job_hash(redis: &TestRedis, id: &ports::JobId) -> HashMap<String, String> {
    let mut c = redis.connection().await;
    c.hgetall(format!("{}q:job:{id}", redis.prefix()))
        .await
        .unwrap()
}

/// The lease deadline of an active job.
async fn lease_deadline(redis: &TestRedis, id: &ports::JobId) -> Option<f64> {
    let mut c = redis.connection().await;
    c.zscore(
        format!("{}q:default:active", redis.prefix()),
        id.to_string(),
    )
    .await
    .unwrap()
}

/// Who holds unique key `key`, and for how much longer (ms; negative: no key).
async fn unique_holder(redis: &TestRedis, key: &str) -> (Option<String>, i64) {
    let mut c = redis.connection().await;
    let k = format!("{}q:unique:{key}", redis.prefix());
    let holder: Option<String> = c.get(&k).await.unwrap();
    let ttl: i64 = c.pttl(&k).await.unwrap();
    (holder, ttl)
}

/// Lets the lease of the job `fetch`ed from "default" run out and recovers
/// it to retry at once, as another worker's recoverer would.
async fn expire_and_recover(redis: &TestRedis, q: &RedisJobQueue, id: &ports::JobId) {
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

#[tokio::test]
async fn enqueued_jobs_are_processed_and_counted() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let script = Arc::new(Script::default());
    let w = start(&q, settings(&[("default", 1)]), "t", script.clone());
    for n in 0..20 {
        q.enqueue(job(n)).await.unwrap();
    }
    eventually("20 jobs", Duration::from_secs(10), || async {
        (script.done() == 20).then_some(())
    })
    .await;
    w.stop().await;
    let s = q.stats("default").await.unwrap();
    assert_eq!(
        (s.pending, s.active, s.retry, s.dead, s.processed, s.failed),
        (0, 0, 0, 0, 20, 0)
    );
    assert!(script.runs().iter().all(|(_, attempt, _)| *attempt == 1));
}

#[tokio::test]
async fn a_failing_job_is_retried_with_backoff_until_it_succeeds() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let script = Arc::new(Script {
        fail_first: HashMap::from([(1, 2)]),
        ..Script::default()
    });
    let w = start(&q, settings(&[("default", 1)]), "t", script.clone());
    q.enqueue(job(1)).await.unwrap();
    eventually("the third attempt", Duration::from_secs(10), || async {
        (script.done() == 1).then_some(())
    })
    .await;
    w.stop().await;
    assert_eq!(script.runs()[0].1, 3, "succeeded on attempt 3");
    let s = q.stats("default").await.unwrap();
    assert_eq!((s.processed, s.failed, s.retry, s.dead), (1, 2, 0, 0));
}

/// Asks to be retried no sooner than `after` on its first attempt.
struct RetryAfter {
    after: Duration,
    attempts: Mutex<Vec<(u32, Instant)>>,
}

#[async_trait]
impl JobHandler for RetryAfter {
    async fn handle(&self, job: &JobContext) -> Result<(), JobFailure> {
        self.attempts
            .lock()
            .unwrap()
            .push((job.attempt, Instant::now()));
        if job.attempt == 1 {
            return Err(JobFailure::Retry {
                error: "come back later".into(),
                after: Some(self.after),
            });
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_retry_is_never_sooner_than_the_handler_asked() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let handler = Arc::new(RetryAfter {
        // Far above the 40-200 ms backoff of these settings.
        after: Duration::from_millis(1500),
        attempts: Mutex::new(Vec::new()),
    });
    let w = start(&q, settings(&[("default", 1)]), "t", handler.clone());
    q.enqueue(job(1)).await.unwrap();
    eventually("the second attempt", Duration::from_secs(10), || async {
        (handler.attempts.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    w.stop().await;
    let attempts = handler.attempts.lock().unwrap().clone();
    assert_eq!((attempts[0].0, attempts[1].0), (1, 2));
    let waited = attempts[1].1 - attempts[0].1;
    assert!(
        waited >= Duration::from_millis(1500),
        "retried after {waited:?}"
    );
    let s = q.stats("default").await.unwrap();
    assert_eq!((s.processed, s.failed, s.retry), (1, 1, 0));
}

#[tokio::test]
async fn past_max_retries_a_job_is_dead_with_its_last_error() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let script = Arc::new(Script {
        always_fail: true,
        ..Script::default()
    });
    let w = start(&q, settings(&[("default", 1)]), "t", script.clone());
    let id = q.enqueue(job(1).max_retries(2)).await.unwrap();
    let dead = eventually("the dead job", Duration::from_secs(10), || async {
        let d = q.dead(None, 10).await.unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await;
    w.stop().await;
    assert_eq!(dead[0].id, id.to_string());
    assert_eq!(dead[0].attempts, 3, "one attempt plus two retries");
    assert_eq!(dead[0].last_error, "boom on attempt 3");
    assert_eq!(q.stats("default").await.unwrap().dead, 1);
}

#[tokio::test]
async fn a_permanent_failure_goes_straight_to_the_dead_set() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let script = Arc::new(Script {
        permanent: true,
        ..Script::default()
    });
    let w = start(&q, settings(&[("default", 1)]), "t", script.clone());
    q.enqueue(job(1).max_retries(10)).await.unwrap();
    let dead = eventually("the dead job", Duration::from_secs(10), || async {
        let d = q.dead(Some("default"), 10).await.unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await;
    w.stop().await;
    assert_eq!(
        (dead[0].attempts, dead[0].last_error.as_str()),
        (1, "bad payload")
    );
}

#[tokio::test]
async fn a_panicking_handler_is_a_failed_attempt_not_a_dead_worker() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let script = Arc::new(Script {
        panic_first: true,
        ..Script::default()
    });
    let w = start(&q, settings(&[("default", 1)]), "t", script.clone());
    q.enqueue(job(1)).await.unwrap();
    q.enqueue(job(2)).await.unwrap();
    eventually(
        "both jobs on their second attempt",
        Duration::from_secs(10),
        || async { (script.done() == 2).then_some(()) },
    )
    .await;
    w.stop().await;
    assert!(script.runs().iter().all(|(_, attempt, _)| *attempt == 2));
}

#[tokio::test]
async fn scheduled_jobs_do_not_run_early() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let script = Arc::new(Script::default());
    let w = start(&q, settings(&[("default", 1)]), "t", script.clone());
    let at = Utc::now() + chrono::Duration::milliseconds(1200);
    let enqueued = Instant::now();
    q.enqueue(job(1).run_at(at)).await.unwrap();
    assert_eq!(q.stats("default").await.unwrap().scheduled, 1);
    eventually("the scheduled job", Duration::from_secs(10), || async {
        (script.done() == 1).then_some(())
    })
    .await;
    w.stop().await;
    let ran_after = script.runs()[0].2 - enqueued;
    assert!(
        ran_after >= Duration::from_millis(1150),
        "ran after {ran_after:?}"
    );
}

#[tokio::test]
async fn unique_keys_refuse_duplicates_until_the_job_completes_or_dies() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let unique = |n| job(n).unique("user:1", Duration::from_secs(600));
    q.enqueue(unique(1)).await.unwrap();
    assert!(
        matches!(q.enqueue(unique(2)).await, Err(EnqueueJobError::Duplicate { key }) if key == "user:1")
    );
    let script = Arc::new(Script::default());
    let w = start(&q, settings(&[("default", 1)]), "t", script.clone());
    eventually("the unique job", Duration::from_secs(10), || async {
        (script.done() == 1).then_some(())
    })
    .await;
    eventually("the key to be released", Duration::from_secs(5), || async {
        q.enqueue(unique(3)).await.ok()
    })
    .await;
    eventually("the second unique job", Duration::from_secs(10), || async {
        (script.done() == 2).then_some(())
    })
    .await;
    w.stop().await;

    // A dead job releases its key too.
    let failing = Arc::new(Script {
        permanent: true,
        ..Script::default()
    });
    let w = start(&q, settings(&[("default", 1)]), "t", failing);
    q.enqueue(unique(4)).await.unwrap();
    eventually("the dead job", Duration::from_secs(10), || async {
        (q.stats("default").await.unwrap().dead == 1).then_some(())
    })
    .await;
    w.stop().await;
    q.enqueue(unique(5)).await.unwrap();
}

#[tokio::test]
async fn a_job_that_runs_past_its_timeout_is_cancelled_and_fails() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let script = Arc::new(Script {
        sleep: Duration::from_secs(30),
        ..Script::default()
    });
    let w = start(&q, settings(&[("default", 1)]), "t", script.clone());
    let started = Instant::now();
    q.enqueue(job(1).timeout(Duration::from_millis(200)).max_retries(0))
        .await
        .unwrap();
    let dead = eventually("the timed-out job", Duration::from_secs(10), || async {
        let d = q.dead(None, 1).await.unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        dead[0].last_error.contains("timed out"),
        "{}",
        dead[0].last_error
    );
    assert_eq!(
        script.running.load(Ordering::SeqCst),
        0,
        "the handler future was dropped"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_never_exceeds_the_limit() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let script = Arc::new(Script {
        sleep: Duration::from_millis(30),
        ..Script::default()
    });
    let mut s = settings(&[("default", 1)]);
    s.concurrency = 4;
    let w = start(&q, s, "t", script.clone());
    for n in 0..40 {
        q.enqueue(job(n)).await.unwrap();
    }
    eventually("40 jobs", Duration::from_secs(20), || async {
        (script.done() == 40).then_some(())
    })
    .await;
    w.stop().await;
    assert_eq!(
        script.max_running.load(Ordering::SeqCst),
        4,
        "reaches but never exceeds 4"
    );
}

#[tokio::test]
async fn weighted_queues_all_make_progress() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let script = Arc::new(Script {
        sleep: Duration::from_millis(2),
        ..Script::default()
    });
    for n in 0..60 {
        q.enqueue(job(n).on_queue("critical")).await.unwrap();
        q.enqueue(job(1000 + n).on_queue("low")).await.unwrap();
    }
    let mut s = settings(&[("critical", 6), ("low", 1)]);
    s.concurrency = 1;
    let w = start(&q, s, "t", script.clone());
    eventually("120 jobs", Duration::from_secs(20), || async {
        (script.done() == 120).then_some(())
    })
    .await;
    w.stop().await;
    let order: Vec<u64> = script.runs().iter().map(|r| r.0).collect();
    let low_in_first_half = order[..60].iter().filter(|n| **n >= 1000).count();
    assert!(
        low_in_first_half > 0,
        "the low queue made progress while critical had work: {order:?}"
    );
    assert!(
        low_in_first_half < 30,
        "critical was favoured: {low_in_first_half} low jobs in the first 60"
    );
}

#[tokio::test]
async fn a_job_whose_worker_died_runs_again_after_its_lease() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    q.enqueue(job(1)).await.unwrap();
    // A "worker" leases the job and dies without a word.
    let leased = q
        .fetch("default", Duration::from_millis(300))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leased.attempt, 1);
    let script = Arc::new(Script::default());
    let w = start(&q, settings(&[("default", 1)]), "t", script.clone());
    eventually("the recovered job", Duration::from_secs(10), || async {
        (script.done() == 1).then_some(())
    })
    .await;
    w.stop().await;
    assert_eq!(script.runs()[0].1, 2, "the second attempt");
}

#[tokio::test]
async fn graceful_shutdown_returns_unfinished_jobs_to_the_queue() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let script = Arc::new(Script {
        sleep: Duration::from_secs(30),
        ..Script::default()
    });
    let mut s = settings(&[("default", 1)]);
    s.shutdown_timeout = Duration::from_millis(300);
    let w = start(&q, s, "t", script.clone());
    q.enqueue(job(1)).await.unwrap();
    q.enqueue(job(2)).await.unwrap();
    eventually("both jobs running", Duration::from_secs(10), || async {
        (script.running.load(Ordering::SeqCst) == 2).then_some(())
    })
    .await;
    w.stop().await;
    let s = q.stats("default").await.unwrap();
    assert_eq!(
        (s.pending, s.active, s.failed),
        (2, 0, 0),
        "returned, not failed"
    );
    let again = q
        .fetch("default", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.attempt, 1, "the interrupted attempt does not count");
}

#[tokio::test]
async fn periodic_jobs_run_once_per_tick_with_two_workers() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let script = Arc::new(Script::default());
    let mut workers = Vec::new();
    for _ in 0..2 {
        let mut w = JobWorker::new(q.clone(), settings(&[("default", 1)]));
        w.handle("t", script.clone());
        w.periodic("every-second", "* * * * * *", job(7)).unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        workers.push(Running {
            stop,
            task: tokio::spawn(async move { w.run(token).await }),
        });
    }
    let started = Instant::now();
    eventually("three ticks", Duration::from_secs(10), || async {
        (script.done() >= 3).then_some(())
    })
    .await;
    let elapsed = started.elapsed();
    for w in workers {
        w.stop().await;
    }
    let runs = script.done();
    assert!(
        runs as u64 <= elapsed.as_secs() + 2,
        "{runs} runs in {elapsed:?}: some tick ran twice"
    );
}

#[tokio::test]
async fn dead_jobs_can_be_listed_revived_and_deleted() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let failing = Arc::new(Script {
        permanent: true,
        ..Script::default()
    });
    let w = start(&q, settings(&[("default", 1)]), "t", failing);
    let a = q.enqueue(job(1)).await.unwrap();
    let b = q.enqueue(job(2)).await.unwrap();
    eventually("two dead jobs", Duration::from_secs(10), || async {
        (q.dead(None, 10).await.unwrap().len() == 2).then_some(())
    })
    .await;
    w.stop().await;
    assert!(q.delete(&b.to_string()).await.unwrap());
    assert!(!q.delete(&b.to_string()).await.unwrap());
    assert!(q.revive(&a.to_string()).await.unwrap());
    let script = Arc::new(Script::default());
    let w = start(&q, settings(&[("default", 1)]), "t", script.clone());
    eventually("the revived job", Duration::from_secs(10), || async {
        (script.done() == 1).then_some(())
    })
    .await;
    w.stop().await;
    let s = q.stats("default").await.unwrap();
    assert_eq!((s.dead, s.pending), (0, 0));
    assert_eq!(q.queues().await.unwrap(), ["default"]);
}

#[tokio::test]
async fn invalid_jobs_are_refused_clearly() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    assert!(matches!(
        q.enqueue(job(1).on_queue("Bad Queue!")).await,
        Err(EnqueueJobError::Invalid(_))
    ));
    let mut empty = job(1);
    empty.kind.clear();
    assert!(matches!(
        q.enqueue(empty).await,
        Err(EnqueueJobError::Invalid(_))
    ));
}

#[tokio::test]
async fn a_stale_lease_holder_cannot_change_the_job_of_the_new_holder() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let id = q
        .enqueue(job(1).unique("stale:1", Duration::from_secs(600)))
        .await
        .unwrap();
    // Worker A leases the job, then stalls: its lease runs out, is recovered,
    // and worker B fetches the job.
    let a = q
        .fetch("default", Duration::from_millis(50))
        .await
        .unwrap()
        .unwrap();
    expire_and_recover(&redis, &q, &id).await;
    let b = eventually("worker B to fetch it", Duration::from_secs(5), || async {
        q.forward("default").await.unwrap();
        q.fetch("default", Duration::from_secs(30)).await.unwrap()
    })
    .await;
    assert_eq!((b.id, b.attempt), (id, 2));
    assert!(b.token > a.token, "a fresh fencing number");
    let before = (
        job_hash(&redis, &id).await,
        lease_deadline(&redis, &id).await,
    );

    // A wakes up and tries everything it could do with its old lease.
    let lost = q
        .heartbeat("default", &[a.lease()], Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(lost, [a.lease()], "A's heartbeat reports the lease lost");
    assert_eq!(
        q.complete("default", a.lease()).await.unwrap(),
        LeaseOutcome::LeaseLost
    );
    assert_eq!(
        q.fail("default", a.lease(), "late", Some(Duration::ZERO))
            .await
            .unwrap(),
        FailOutcome::LeaseLost
    );
    assert_eq!(
        q.fail("default", a.lease(), "late", None).await.unwrap(),
        FailOutcome::LeaseLost
    );
    assert_eq!(
        q.requeue("default", a.lease()).await.unwrap(),
        LeaseOutcome::LeaseLost
    );

    // B's job is untouched: active under B's lease, same deadline, same
    // attempt, unique key held.
    let after = (
        job_hash(&redis, &id).await,
        lease_deadline(&redis, &id).await,
    );
    assert_eq!(before, after);
    let (fields, _) = after;
    assert_eq!(fields["state"], "active");
    assert_eq!(fields["lease"], b.token.to_string());
    assert_eq!(fields["attempt"], "2");
    assert_eq!(
        unique_holder(&redis, "stale:1").await.0,
        Some(id.to_string())
    );
    let s = q.stats("default").await.unwrap();
    assert_eq!(
        (s.active, s.pending, s.retry, s.dead, s.processed),
        (1, 0, 0, 0, 0)
    );
    assert!(matches!(
        q.enqueue(job(2).unique("stale:1", Duration::from_secs(600)))
            .await,
        Err(EnqueueJobError::Duplicate { .. })
    ));

    // B's lease works.
    assert!(
        q.heartbeat("default", &[b.lease()], Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        q.complete("default", b.lease()).await.unwrap(),
        LeaseOutcome::Applied
    );
    assert_eq!(unique_holder(&redis, "stale:1").await.0, None);
}

/// Stalls forever on its first attempt; later attempts succeed.
#[derive(Default)]
struct StallFirst {
    running: AtomicUsize,
    attempts: Mutex<Vec<(u32, Instant)>>,
}

#[async_trait]
impl JobHandler for StallFirst {
    async fn handle(&self, job: &JobContext) -> Result<(), JobFailure> {
        self.attempts
            .lock()
            .unwrap()
            .push((job.attempt, Instant::now()));
        if job.attempt == 1 {
            self.running.fetch_add(1, Ordering::SeqCst);
            let _guard = Leaving(&self.running);
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_handler_whose_lease_is_lost_is_cancelled_by_the_heartbeat() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let handler = Arc::new(StallFirst::default());
    let mut s = settings(&[("default", 1)]);
    // One slot, and no recoverer of its own: the lease is taken away by
    // "another worker" (the test) below.
    s.concurrency = 1;
    s.recover_every = Duration::from_secs(3600);
    let w = start(&q, s, "t", handler.clone());
    let id = q.enqueue(job(1)).await.unwrap();
    eventually(
        "the first attempt to run",
        Duration::from_secs(10),
        || async { (handler.running.load(Ordering::SeqCst) == 1).then_some(()) },
    )
    .await;
    expire_and_recover(&redis, &q, &id).await;
    // The heartbeat finds the lease lost and drops the stalled handler,
    // which frees the worker's only slot for the second attempt.
    eventually("the second attempt", Duration::from_secs(10), || async {
        (handler.attempts.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    assert_eq!(
        handler.running.load(Ordering::SeqCst),
        0,
        "the stalled handler was cancelled"
    );
    let s = eventually("the job to complete", Duration::from_secs(10), || async {
        let s = q.stats("default").await.unwrap();
        (s.processed == 1).then_some(s)
    })
    .await;
    w.stop().await;
    assert_eq!(
        (s.active, s.pending, s.retry, s.dead, s.failed),
        (0, 0, 0, 0, 1),
        "the lost attempt recorded nothing of its own"
    );
}

/// Panics when dropped (outside any `catch_unwind`), unless already unwinding.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("the handler's future panicked while being dropped");
        }
    }
}

/// On its first attempt, holds a `Bomb` across a long sleep; a timeout then
/// drops the future and the bomb goes off. Later attempts succeed.
#[derive(Default)]
struct PanicOnDrop {
    attempts: Mutex<Vec<u32>>,
}

#[async_trait]
impl JobHandler for PanicOnDrop {
    async fn handle(&self, job: &JobContext) -> Result<(), JobFailure> {
        self.attempts.lock().unwrap().push(job.attempt);
        if job.attempt == 1 {
            let bomb = Bomb;
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(bomb);
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_panic_outside_the_handler_does_not_keep_its_lease_alive() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let handler = Arc::new(PanicOnDrop::default());
    let w = start(&q, settings(&[("default", 1)]), "t", handler.clone());
    q.enqueue(job(1).timeout(Duration::from_millis(200)))
        .await
        .unwrap();
    // The heartbeat stops for the panicked task, so the lease ends and the
    // job is recovered and run again.
    eventually("the second attempt", Duration::from_secs(10), || async {
        (handler.attempts.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    let s = eventually("the job to complete", Duration::from_secs(10), || async {
        let s = q.stats("default").await.unwrap();
        (s.processed == 1).then_some(s)
    })
    .await;
    w.stop().await;
    assert_eq!(*handler.attempts.lock().unwrap(), [1, 2]);
    assert_eq!((s.active, s.retry, s.dead), (0, 0, 0));
}

#[tokio::test]
async fn a_recovered_job_waits_for_its_backoff_before_running_again() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    q.enqueue(job(1)).await.unwrap();
    // A "worker" leases the job and dies without a word.
    let fetched = Instant::now();
    q.fetch("default", Duration::from_millis(100))
        .await
        .unwrap()
        .unwrap();
    let script = Arc::new(Script::default());
    let mut s = settings(&[("default", 1)]);
    // The first retry waits 500 to 1000 ms.
    s.retry_base = Duration::from_millis(1000);
    s.retry_cap = Duration::from_millis(1000);
    let w = start(&q, s, "t", script.clone());
    eventually("the recovered job", Duration::from_secs(10), || async {
        (script.done() == 1).then_some(())
    })
    .await;
    w.stop().await;
    let (_, attempt, ran) = script.runs()[0];
    assert_eq!(attempt, 2);
    let after = ran - fetched;
    assert!(
        after >= Duration::from_millis(600),
        "ran {after:?} after the lease began: 100 ms lease + at least 500 ms backoff"
    );
}

#[tokio::test]
async fn a_retried_job_does_not_run_before_its_backoff_elapses() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    // No Retry-After of its own: the worker's backoff alone decides.
    let handler = Arc::new(RetryAfter {
        after: Duration::ZERO,
        attempts: Mutex::new(Vec::new()),
    });
    let mut s = settings(&[("default", 1)]);
    // The first retry waits 400 to 800 ms.
    s.retry_base = Duration::from_millis(800);
    s.retry_cap = Duration::from_millis(800);
    let w = start(&q, s, "t", handler.clone());
    q.enqueue(job(1)).await.unwrap();
    eventually("the second attempt", Duration::from_secs(10), || async {
        (handler.attempts.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    w.stop().await;
    let attempts = handler.attempts.lock().unwrap().clone();
    let waited = attempts[1].1 - attempts[0].1;
    assert!(
        waited >= Duration::from_millis(400),
        "retried after {waited:?}, before the backoff"
    );
}

#[tokio::test]
async fn a_unique_key_is_held_until_a_scheduled_job_is_due_plus_its_ttl() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let at = Utc::now() + chrono::Duration::seconds(20);
    let id = q
        .enqueue(job(1).unique("later", Duration::from_secs(5)).run_at(at))
        .await
        .unwrap();
    let (holder, ttl) = unique_holder(&redis, "later").await;
    assert_eq!(holder, Some(id.to_string()));
    assert!(
        ttl > 20_000 && ttl <= 25_000,
        "held {ttl} ms: until due (20 s) plus the TTL (5 s)"
    );
}

#[tokio::test]
async fn a_retry_keeps_the_unique_key_until_the_retry_is_due_plus_its_ttl() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let id = q
        .enqueue(job(1).unique("backoff", Duration::from_secs(1)))
        .await
        .unwrap();
    // A failed attempt retried in 20 s.
    let a = q
        .fetch("default", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        q.fail("default", a.lease(), "later", Some(Duration::from_secs(20)))
            .await
            .unwrap(),
        FailOutcome::Retry
    );
    let (holder, ttl) = unique_holder(&redis, "backoff").await;
    assert_eq!(holder, Some(id.to_string()));
    assert!(ttl > 20_000, "held {ttl} ms past a 20 s backoff");

    // A recovered lease retried after a 10 to 20 s backoff.
    let mut c = redis.connection().await;
    let _: i64 = c
        .zadd(
            format!("{}q:default:retry", redis.prefix()),
            id.to_string(),
            0,
        )
        .await
        .unwrap();
    q.forward("default").await.unwrap();
    q.fetch("default", Duration::from_millis(10))
        .await
        .unwrap()
        .unwrap();
    // As if the key were about to run out when the lease is recovered.
    let _: bool = c
        .pexpire(format!("{}q:unique:backoff", redis.prefix()), 100)
        .await
        .unwrap();
    eventually(
        "the lease to be recovered",
        Duration::from_secs(5),
        || async {
            let r = q
                .recover("default", Duration::from_secs(10), Duration::from_secs(10))
                .await
                .unwrap();
            (r == (1, 0)).then_some(())
        },
    )
    .await;
    let (holder, ttl) = unique_holder(&redis, "backoff").await;
    assert_eq!(holder, Some(id.to_string()));
    assert!(ttl > 5_000, "held {ttl} ms past at least a 5 s backoff");
}

#[tokio::test]
async fn a_revived_job_takes_its_unique_key_again_but_never_a_newer_jobs() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let unique = |n| job(n).unique("revive", Duration::from_secs(600));
    let kill = |id: ports::JobId| {
        let q = q.clone();
        async move {
            let leased = q
                .fetch("default", Duration::from_secs(30))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(leased.id, id);
            assert_eq!(
                q.fail("default", leased.lease(), "dead", None)
                    .await
                    .unwrap(),
                FailOutcome::Dead
            );
        }
    };
    let old = q.enqueue(unique(1)).await.unwrap();
    kill(old).await;
    assert_eq!(unique_holder(&redis, "revive").await.0, None, "released");
    assert!(q.revive(&old.to_string()).await.unwrap());
    assert_eq!(
        unique_holder(&redis, "revive").await.0,
        Some(old.to_string()),
        "taken again"
    );
    assert!(matches!(
        q.enqueue(unique(2)).await,
        Err(EnqueueJobError::Duplicate { .. })
    ));

    // It dies again, and a newer job takes the key before the revive.
    kill(old).await;
    let newer = q.enqueue(unique(3)).await.unwrap();
    assert!(q.revive(&old.to_string()).await.unwrap(), "revived anyway");
    assert_eq!(
        unique_holder(&redis, "revive").await.0,
        Some(newer.to_string()),
        "not stolen"
    );
    // The revived job finishing does not release the newer job's key.
    let first = q
        .fetch("default", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let second = q
        .fetch("default", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let (revived, newest) = if first.id == old {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!((revived.id, newest.id), (old, newer));
    assert_eq!(
        q.complete("default", revived.lease()).await.unwrap(),
        LeaseOutcome::Applied
    );
    assert_eq!(
        unique_holder(&redis, "revive").await.0,
        Some(newer.to_string())
    );
    q.complete("default", newest.lease()).await.unwrap();
    assert_eq!(unique_holder(&redis, "revive").await.0, None);
}

#[tokio::test]
async fn deleting_a_job_releases_its_unique_key() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let unique = |n| job(n).unique("delete", Duration::from_secs(600));
    let id = q.enqueue(unique(1)).await.unwrap();
    assert!(q.delete(&id.to_string()).await.unwrap());
    q.enqueue(unique(2)).await.unwrap();
}

#[tokio::test]
async fn a_job_recovered_into_the_dead_set_releases_its_unique_key() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let unique = |n| job(n).unique("recovered", Duration::from_secs(600));
    let id = q.enqueue(unique(1).max_retries(0)).await.unwrap();
    q.fetch("default", Duration::from_millis(20))
        .await
        .unwrap()
        .unwrap();
    eventually(
        "the lease to end in the dead set",
        Duration::from_secs(5),
        || async {
            let r = q
                .recover("default", Duration::ZERO, Duration::ZERO)
                .await
                .unwrap();
            (r == (0, 1)).then_some(())
        },
    )
    .await;
    assert_eq!(q.dead(None, 10).await.unwrap()[0].id, id.to_string());
    q.enqueue(unique(2)).await.unwrap();
}

#[tokio::test]
async fn the_recoverer_caps_the_dead_set_by_size_and_age_without_new_deaths() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = q.enqueue(job(n)).await.unwrap();
        let leased = q
            .fetch("default", Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        q.fail("default", leased.lease(), "dead", None)
            .await
            .unwrap();
        ids.push(id);
    }
    assert_eq!(q.stats("default").await.unwrap().dead, 3);
    // A worker whose queue keeps at most 2 dead jobs, for 2 s, and no job dies.
    let capped = RedisJobQueue::new(
        queue_adapter::build_pool(&RedisSettings::new(redis.url())).unwrap(),
        QueueSettings {
            dead_max_size: 2,
            dead_max_age: Duration::from_secs(2),
            ..QueueSettings::new(redis.prefix())
        },
    );
    let w = start(
        &capped,
        settings(&[("default", 1)]),
        "t",
        Arc::new(Script::default()),
    );
    eventually(
        "the dead set capped by size",
        Duration::from_secs(5),
        || async { (q.stats("default").await.unwrap().dead == 2).then_some(()) },
    )
    .await;
    assert!(
        job_hash(&redis, &ids[0]).await.is_empty(),
        "the oldest is dropped"
    );
    eventually(
        "the dead set capped by age",
        Duration::from_secs(10),
        || async { (q.stats("default").await.unwrap().dead == 0).then_some(()) },
    )
    .await;
    w.stop().await;
    for id in &ids {
        assert!(job_hash(&redis, id).await.is_empty());
    }
}

#[tokio::test]
async fn a_periodic_tick_is_enqueued_once_however_often_it_is_tried() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let first = q.enqueue_tick("report", 1000, job(1)).await.unwrap();
    assert!(matches!(first, TickOutcome::Enqueued(_)));
    assert_eq!(
        q.enqueue_tick("report", 1000, job(1)).await.unwrap(),
        TickOutcome::AlreadyEnqueued
    );
    assert!(matches!(
        q.enqueue_tick("report", 1001, job(1)).await.unwrap(),
        TickOutcome::Enqueued(_)
    ));
    assert_eq!(q.stats("default").await.unwrap().pending, 2);

    // A tick refused by the job's own unique key is not claimed, so it can
    // be tried again once the key is free.
    let unique = || job(2).unique("report-run", Duration::from_secs(600));
    let TickOutcome::Enqueued(running) = q.enqueue_tick("unique", 1, unique()).await.unwrap()
    else {
        panic!("tick 1 not enqueued");
    };
    assert!(matches!(
        q.enqueue_tick("unique", 2, unique()).await,
        Err(EnqueueJobError::Duplicate { .. })
    ));
    assert!(q.delete(&running.to_string()).await.unwrap());
    assert!(matches!(
        q.enqueue_tick("unique", 2, unique()).await.unwrap(),
        TickOutcome::Enqueued(_)
    ));
}

#[tokio::test]
async fn revive_all_revives_the_dead_jobs_of_one_queue_or_of_all() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    for (n, queue_name) in [(1, "default"), (2, "default"), (3, "low")] {
        q.enqueue(job(n).on_queue(queue_name)).await.unwrap();
        let leased = q
            .fetch(queue_name, Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        q.fail(queue_name, leased.lease(), "dead", None)
            .await
            .unwrap();
    }
    assert_eq!(q.revive_all(Some("low")).await.unwrap(), 1);
    let (low, default) = (
        q.stats("low").await.unwrap(),
        q.stats("default").await.unwrap(),
    );
    assert_eq!((low.dead, low.pending), (0, 1));
    assert_eq!((default.dead, default.pending), (2, 0));
    assert_eq!(q.revive_all(None).await.unwrap(), 2);
    let default = q.stats("default").await.unwrap();
    assert_eq!((default.dead, default.pending), (0, 2));
    assert_eq!(
        q.revive_all(None).await.unwrap(),
        0,
        "nothing left to revive"
    );
    let again = q
        .fetch("default", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.attempt, 1, "a fresh set of retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_share_batches_and_each_keeps_its_own_outcome() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    // 300 at once: more than one batch. A third share one unique key, a
    // third are scheduled, a third are plain.
    let results = futures_util::future::join_all((0..300_u64).map(|n| {
        let q = q.clone();
        async move {
            let j = match n % 3 {
                0 => job(n).unique("shared", Duration::from_secs(60)),
                1 => job(n).run_at(Utc::now() + chrono::Duration::seconds(600)),
                _ => job(n),
            };
            (n, q.enqueue(j).await)
        }
    }))
    .await;
    let mut ids = std::collections::HashSet::new();
    let (mut unique_ok, mut duplicates) = (0, 0);
    for (n, r) in results {
        match (n % 3, r) {
            (0, Ok(id)) => {
                unique_ok += 1;
                ids.insert(id);
            }
            (0, Err(EnqueueJobError::Duplicate { key })) => {
                assert_eq!(key, "shared");
                duplicates += 1;
            }
            (_, Ok(id)) => assert!(ids.insert(id), "job {n} got an id twice"),
            (_, Err(e)) => panic!("job {n}: {e}"),
        }
    }
    assert_eq!((unique_ok, duplicates), (1, 99));
    assert_eq!(ids.len(), 201);
    let stats = q.stats("default").await.unwrap();
    assert_eq!((stats.pending, stats.scheduled), (101, 100), "{stats:?}");
    // Every pending one is there to fetch, each once.
    let fetched = q
        .fetch_many("default", Duration::from_secs(30), 200)
        .await
        .unwrap();
    assert_eq!(fetched.len(), 101);
    assert!(fetched.iter().all(|j| ids.contains(&j.id)));
}

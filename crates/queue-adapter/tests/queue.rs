//! The job queue and worker runtime against a real Redis.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use async_trait::async_trait;
use chrono::Utc;
use ports::testing::contract::eventually;
use ports::{EnqueueJobError, JobContext, JobFailure, JobHandler, JobQueue, NewJob};
use queue_adapter::{JobWorker, QueueSettings, RedisJobQueue, RedisSettings, WorkerSettings};
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

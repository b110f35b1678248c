//! Worker processes killed with SIGKILL: their jobs run again, on another
//! worker, after their lease expires (and the retry backoff); nothing is
//! lost, and repeats are bounded by the leases the killed workers held.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use ports::{JobQueue, NewJob};
use ports_testing::contract::eventually;
use queue_adapter::{QueueSettings, RedisJobQueue, RedisSettings};
use redis::AsyncCommands as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use test_support::TestRedis;

const BIN: &str = env!("CARGO_BIN_EXE_queue-crash-worker");

fn spawn_worker(redis: &TestRedis, concurrency: usize, lease_ms: u64) -> Child {
    Command::new(BIN)
        .args([
            redis.url(),
            redis.prefix(),
            &concurrency.to_string(),
            &lease_ms.to_string(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn kill(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

fn job(n: u64, sleep_ms: u64) -> NewJob {
    NewJob::new(
        "crash:test",
        1,
        &serde_json::json!({"n": n, "sleep_ms": sleep_ms}),
    )
    .unwrap()
}

async fn counts(redis: &TestRedis) -> (u64, u64) {
    let mut c = redis.connection().await;
    let runs: Option<u64> = c.get(format!("{}runs", redis.prefix())).await.unwrap();
    let done: u64 = c.scard(format!("{}done", redis.prefix())).await.unwrap();
    (runs.unwrap_or(0), done)
}

fn queue(redis: &TestRedis) -> RedisJobQueue {
    RedisJobQueue::new(
        queue_adapter::build_pool(&RedisSettings::new(redis.url())).unwrap(),
        QueueSettings::new(redis.prefix()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_a_sigkilled_worker_runs_again_on_another_worker() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let mut a = spawn_worker(&redis, 2, 1000);
    q.enqueue(job(1, 1500)).await.unwrap();
    eventually(
        "the job to start on worker A",
        Duration::from_secs(20),
        || async { (counts(&redis).await.0 == 1).then_some(()) },
    )
    .await;
    kill(&mut a);
    let killed_at = Instant::now();
    let mut b = spawn_worker(&redis, 2, 1000);
    eventually(
        "the job to finish on worker B",
        Duration::from_secs(20),
        || async { (counts(&redis).await.1 == 1).then_some(()) },
    )
    .await;
    // The handler's work shows before B persists the completion; killing B
    // in between would (rightly) leave the job to run a third time.
    let s = eventually(
        "worker B to record the completion",
        Duration::from_secs(20),
        || async {
            let s = q.stats("default").await.unwrap();
            (s.processed == 1).then_some(s)
        },
    )
    .await;
    kill(&mut b);
    assert!(
        killed_at.elapsed() >= Duration::from_millis(900),
        "not before the lease expired"
    );
    assert_eq!(counts(&redis).await, (2, 1), "ran twice, done once");
    assert_eq!(
        (s.active, s.pending, s.retry, s.dead, s.processed),
        (0, 0, 0, 0, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_jobs_survive_two_worker_kills_with_bounded_duplicates() {
    const JOBS: u64 = 10_000;
    const CONCURRENCY: usize = 16;
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let mut a = spawn_worker(&redis, CONCURRENCY, 1000);
    let mut b = spawn_worker(&redis, CONCURRENCY, 1000);
    for n in 0..JOBS {
        q.enqueue(job(n, 1)).await.unwrap();
    }
    let started = Instant::now();
    for threshold in [JOBS / 4, JOBS * 3 / 5] {
        eventually(
            "progress before the kill",
            Duration::from_secs(120),
            || async { (counts(&redis).await.1 >= threshold).then_some(()) },
        )
        .await;
        kill(&mut a);
        a = spawn_worker(&redis, CONCURRENCY, 1000);
    }
    eventually("every job done", Duration::from_secs(180), || async {
        (counts(&redis).await.1 == JOBS).then_some(())
    })
    .await;
    let elapsed = started.elapsed();
    let s = eventually("the queue to settle", Duration::from_secs(20), || async {
        let s = q.stats("default").await.unwrap();
        (s.active == 0 && s.pending == 0 && s.retry == 0).then_some(s)
    })
    .await;
    kill(&mut a);
    kill(&mut b);
    let (runs, done) = counts(&redis).await;
    let duplicates = runs - done;
    eprintln!(
        "10k jobs, 2 kills: {done} done, {runs} runs, {duplicates} duplicates, dead {}, {elapsed:?}",
        s.dead
    );
    assert_eq!(done, JOBS, "no job lost");
    assert_eq!(s.dead, 0);
    // A repeat is a job the killed worker held a lease on: running, or done
    // but its completion not yet persisted. A job keeps its lease and its
    // concurrency slot until the completion is persisted, so a worker holds
    // at most CONCURRENCY leases, and each kill repeats at most CONCURRENCY
    // jobs. (A live worker's lease recovered for a missed heartbeat would
    // add a repeat too; with fencing its handler is cancelled, but its run
    // has already been counted. The 1 s lease leaves a wide margin here.)
    assert!(
        duplicates <= 2 * CONCURRENCY as u64,
        "duplicates {duplicates} exceed the leases held by the two killed workers"
    );
}

//! Scenario 3: 100,000 no-op jobs through the queue at concurrency 64,
//! against redis-benchmark LPUSH/RPOP in the same run.

use crate::report::Scenario;
use crate::tools;
use async_trait::async_trait;
use ports::{JobContext, JobFailure, JobHandler, JobQueue as _, NewJob};
use queue_adapter::{JobWorker, QueueSettings, RedisJobQueue, RedisSettings, WorkerSettings};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Records, per job, the time from enqueue to start.
struct NoOp {
    waits_us: Mutex<Vec<f64>>,
}

#[async_trait]
impl JobHandler for NoOp {
    async fn handle(&self, job: &JobContext) -> Result<(), JobFailure> {
        let enqueued = job.payload["t"].as_i64().unwrap_or(0);
        let now = chrono::Utc::now().timestamp_micros();
        if let Ok(mut w) = self.waits_us.lock() {
            w.push((now - enqueued) as f64);
        }
        Ok(())
    }
}

pub(crate) async fn run(jobs: usize, out: &mut Vec<Scenario>) -> anyhow::Result<()> {
    let n = jobs.to_string();
    let lpush = tools::redis_benchmark(&["-t", "lpush", "-n", &n, "-c", "64", "-P", "1"])?;
    let rpop = tools::redis_benchmark(&["-t", "rpop", "-n", &n, "-c", "64", "-P", "1"])?;

    let redis = test_support::TestRedis::new().await;
    let pool = queue_adapter::build_pool(&RedisSettings {
        max_connections: 64,
        ..RedisSettings::new(redis.url())
    })?;
    let queue = RedisJobQueue::new(pool, QueueSettings::new(redis.prefix()));
    let handler = Arc::new(NoOp {
        waits_us: Mutex::new(Vec::with_capacity(jobs)),
    });
    let mut worker = JobWorker::new(
        queue.clone(),
        WorkerSettings {
            concurrency: 64,
            ..WorkerSettings::new("bench", vec![("default".into(), 1)])
        },
    );
    worker.handle("bench:noop", handler.clone());
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));

    // The queue runs in this process: a profile, if asked for, is of us.
    let perf = tools::Perf::attach(std::process::id(), "queue");
    let started = Instant::now();
    let producers: Vec<_> = (0..64)
        .map(|p| {
            let q = queue.clone();
            tokio::spawn(async move {
                for _ in (p..jobs).step_by(64) {
                    let t = chrono::Utc::now().timestamp_micros();
                    let job =
                        NewJob::new("bench:noop", 1, &serde_json::json!({"t": t}))?.max_retries(0);
                    q.enqueue(job).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for p in producers {
        p.await??;
    }
    let enqueued_in = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done = handler.waits_us.lock().map(|w| w.len()).unwrap_or(0);
        if done >= jobs {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "only {done} of {jobs} jobs ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = started.elapsed();
    drop(perf);
    stop.cancel();
    running.await?;
    let mut waits = handler
        .waits_us
        .lock()
        .map(|w| w.clone())
        .unwrap_or_default();
    waits.sort_by(f64::total_cmp);
    let jobs_per_s = jobs as f64 / total.as_secs_f64();

    let mut s = Scenario::new("3. job queue");
    s.ratio(
        &format!(
            "{jobs} no-op jobs enqueued + processed, concurrency 64, vs redis-benchmark LPUSH -P 1"
        ),
        jobs_per_s,
        lpush,
        0.20,
        "jobs/s",
    );
    s.figure(
        "enqueue rate jobs/s",
        jobs as f64 / enqueued_in.as_secs_f64(),
    );
    s.figure("redis-benchmark RPOP req/s", rpop);
    s.figure(
        "enqueue-to-start p50 ms",
        tools::percentile(&waits, 0.5) / 1000.0,
    );
    s.figure(
        "enqueue-to-start p99 ms",
        tools::percentile(&waits, 0.99) / 1000.0,
    );
    out.push(s);
    Ok(())
}

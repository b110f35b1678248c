//! A worker process for the crash tests: runs `crash:test` jobs that count
//! their runs in Redis, until killed.
//!
//! `queue-crash-worker <redis url> <key prefix> <concurrency> <lease ms>`
//!
//! Each job's payload is `{"n": <number>, "sleep_ms": <ms>}`. A run does
//! `INCR <prefix>runs`, sleeps, then `SADD <prefix>done <n>`, so the test can
//! count completions and repeats.

use async_trait::async_trait;
use deadpool_redis::redis::AsyncCommands as _;
use ports::{JobContext, JobFailure, JobHandler};
use queue_adapter::{JobWorker, QueueSettings, RedisJobQueue, RedisSettings, WorkerSettings};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

struct Counting {
    redis: deadpool_redis::redis::aio::MultiplexedConnection,
    prefix: String,
}

#[derive(serde::Deserialize)]
struct Payload {
    n: u64,
    sleep_ms: u64,
}

#[async_trait]
impl JobHandler for Counting {
    async fn handle(&self, job: &JobContext) -> Result<(), JobFailure> {
        let p: Payload = job.payload()?;
        let mut c = self.redis.clone();
        let _: i64 = c
            .incr(format!("{}runs", self.prefix), 1)
            .await
            .map_err(JobFailure::retry)?;
        tokio::time::sleep(Duration::from_millis(p.sleep_ms)).await;
        let _: i64 = c
            .sadd(format!("{}done", self.prefix), p.n)
            .await
            .map_err(JobFailure::retry)?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 5,
        "usage: queue-crash-worker <redis url> <prefix> <concurrency> <lease ms>"
    );
    let (url, prefix) = (&args[1], &args[2]);
    let concurrency: usize = args[3].parse()?;
    let lease = Duration::from_millis(args[4].parse()?);
    let pool = queue_adapter::build_pool(&RedisSettings::new(url.clone()))?;
    let queue = RedisJobQueue::new(pool, QueueSettings::new(prefix));
    let mut settings = WorkerSettings::new(
        format!("crash-{}", std::process::id()),
        vec![("default".into(), 1)],
    );
    settings.concurrency = concurrency;
    settings.lease = lease;
    settings.recover_every = lease / 2;
    settings.forward_every = Duration::from_millis(50);
    settings.retry_base = Duration::from_millis(20);
    let mut worker = JobWorker::new(queue, settings);
    worker.handle(
        "crash:test",
        Arc::new(Counting {
            redis: deadpool_redis::redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await?,
            prefix: prefix.clone(),
        }),
    );
    worker.run(CancellationToken::new()).await;
    Ok(())
}

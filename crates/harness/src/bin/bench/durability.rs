//! Scenario 9: what waiting for a replica (`WAIT`, `REDIS_WAIT_REPLICAS=auto`)
//! costs. The same work against a primary with a replica (each
//! enqueue, finished job's removal and relay batch waits for it) and
//! against a lone Redis (nothing to wait for), both `redis-server`
//! processes of this run: enqueues from 64 tasks, jobs run by a worker of
//! concurrency 64, and relay-style publishing (100 fenced appends, then one
//! confirmation, in turn).

use crate::report::Scenario;
use async_trait::async_trait;
use domain::{DomainEvent, EventEnvelope, FirebaseUid, UserDeleted, UserId};
use ports::{EventPublisher as _, JobContext, JobFailure, JobHandler, JobQueue as _, NewJob};
use queue_adapter::{JobWorker, QueueSettings, RedisJobQueue, RedisSettings, WorkerSettings};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use streams_adapter::RedisStreamPublisher;
use tokio_util::sync::CancellationToken;

const KIND: &str = "bench.wait";
const LIMIT: Duration = Duration::from_secs(300);

struct Done(AtomicUsize, tokio::sync::Notify, usize);

#[async_trait]
impl JobHandler for Done {
    async fn handle(&self, _: &JobContext) -> Result<(), JobFailure> {
        if self.0.fetch_add(1, Ordering::Relaxed) + 1 == self.2 {
            self.1.notify_one();
        }
        Ok(())
    }
}

/// Jobs enqueued per second, and run (fetched, handled, removed) per second.
async fn queue(url: &str, jobs: usize) -> anyhow::Result<(f64, f64)> {
    let pool = queue_adapter::build_pool(&RedisSettings {
        max_connections: 16,
        ..RedisSettings::new(url)
    })?;
    let queue = RedisJobQueue::new(pool, QueueSettings::new("bench-wait:"));
    let started = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|p| {
            let q = queue.clone();
            tokio::spawn(async move {
                for _ in (p..jobs).step_by(64) {
                    q.enqueue(NewJob::new(KIND, 1, &0)?.max_retries(0)).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let enqueued = jobs as f64 / started.elapsed().as_secs_f64();
    let done = Arc::new(Done(AtomicUsize::new(0), tokio::sync::Notify::new(), jobs));
    let mut worker = JobWorker::new(
        queue,
        WorkerSettings {
            concurrency: 64,
            ..WorkerSettings::new("bench-wait", vec![("default".into(), 1)])
        },
    );
    worker.handle(KIND, done.clone());
    let stop = CancellationToken::new();
    let started = Instant::now();
    let running = tokio::spawn(worker.run(stop.clone()));
    tokio::time::timeout(LIMIT, done.1.notified()).await?;
    let ran = jobs as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    running.await?;
    Ok((enqueued, ran))
}

/// Events published per second as the relay does: batches of 100 fenced
/// appends, each batch confirmed.
async fn relay_publish(url: &str, events: usize) -> anyhow::Result<f64> {
    let client = streams_adapter::connect(url, Duration::from_secs(5)).await?;
    let publisher = RedisStreamPublisher::new(client, "bench-wait:");
    let mut event = domain::RawEvent::from(&EventEnvelope::new(
        DomainEvent::UserDeleted(UserDeleted {
            user_id: UserId::new(),
            uid: FirebaseUid::parse("bench")?,
        }),
        chrono::Utc::now(),
    ));
    let started = Instant::now();
    for batch in 0..events.div_ceil(100) {
        for _ in 0..100.min(events - batch * 100) {
            event.id = uuid::Uuid::now_v7();
            publisher
                .publish_as_leader(&event, ports::LeaderTerm(1))
                .await?;
        }
        publisher.confirm().await?;
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

pub(crate) async fn run(quick: bool, out: &mut Vec<Scenario>) -> anyhow::Result<()> {
    let (jobs, events) = if quick {
        (5_000, 5_000)
    } else {
        (30_000, 30_000)
    };
    let ha = tokio::task::spawn_blocking(test_support::TestSentinel::start).await?;
    let lone = tokio::task::spawn_blocking(test_support::RedisProcess::start).await?;
    let replicated = ha.primary_url();
    let (enq_r, ran_r) = queue(&replicated, jobs).await?;
    let (enq_l, ran_l) = queue(&lone.url(), jobs).await?;
    let pub_r = relay_publish(&replicated, events).await?;
    let pub_l = relay_publish(&lone.url(), events).await?;
    let mut s = Scenario::new("9. waiting for a replica");
    s.ratio_reported(
        "enqueue (64 concurrent), primary with a replica (concurrent enqueues share a WAIT) vs a lone Redis",
        enq_r,
        enq_l,
        "jobs/s",
    );
    s.ratio_reported(
        "jobs run (concurrency 64), primary with a replica (removals share a WAIT) vs a lone Redis",
        ran_r,
        ran_l,
        "jobs/s",
    );
    s.ratio_reported(
        "relay publishing (100 fenced appends + one confirmation), primary with a replica vs a lone Redis",
        pub_r,
        pub_l,
        "events/s",
    );
    out.push(s);
    Ok(())
}

//! The worker's background loops: forward due jobs, recover expired
//! leases, heartbeat held ones, report stats, enqueue periodic ticks.

use super::*;

/// Starts every background loop; they stop when `stop` is cancelled.
pub(super) fn start(
    queue: &RedisJobQueue,
    settings: &Arc<WorkerSettings>,
    held: &Held,
    periodic: Vec<Periodic>,
    stop: &CancellationToken,
) -> JoinSet<()> {
    let mut loops = JoinSet::new();
    loops.spawn(forwarder(queue.clone(), settings.clone(), stop.clone()));
    loops.spawn(recoverer(queue.clone(), settings.clone(), stop.clone()));
    loops.spawn(crate::leases::heartbeat(
        queue.clone(),
        settings.lease,
        held.clone(),
        stop.clone(),
    ));
    loops.spawn(stats(queue.clone(), settings.clone(), stop.clone()));
    if !periodic.is_empty() {
        loops.spawn(crate::periodic::scheduler(
            queue.clone(),
            periodic,
            stop.clone(),
        ));
    }
    loops
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
                metrics::gauge!("queue_paused", "queue" => q.clone()).set(if s.paused {
                    1.0
                } else {
                    0.0
                });
            }
        }
    }
}

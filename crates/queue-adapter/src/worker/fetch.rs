//! The fetch loop: fills free slots with jobs, a batch per round trip, in
//! weighted queue order; waits for a wake-up when there is nothing to do and
//! backs off while Redis is unreachable.

use super::*;

/// The queues in the order to try them this time: a weighted random shuffle.
pub(super) fn weighted_order(queues: &[(String, u32)]) -> Vec<&str> {
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

/// Fetches and starts jobs until `shutdown` is cancelled.
pub(super) async fn fetch_loop(
    shared: &Arc<Shared>,
    held: &Held,
    tasks: &mut JoinSet<()>,
    shutdown: &CancellationToken,
) {
    let settings = &shared.settings;
    let queue = &shared.queue;
    let semaphore = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let queue_names: Vec<String> = settings.queues.iter().map(|(q, _)| q.clone()).collect();
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
        // Idle until woken, or until a rate limit lets the next job start.
        let mut idle_wait = settings.idle_wait;
        match fetch(queue, settings, permits.len(), &mut idle_wait).await {
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
                        let run = execute::execute(&shared, job, lease, permit);
                        if let Err(panic) = AssertUnwindSafe(run).catch_unwind().await {
                            tracing::error!(job_id = %id, panic = %execute::panic_message(&*panic), "job task panicked outside its handler; the job runs again when its lease ends");
                        }
                    });
                }
            }
            Ok(None) => {
                drop(permits);
                tokio::select! {
                    r = queue.wait_for_work(&queue_names, idle_wait) => {
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
}

/// Up to `slots` jobs across the queues in weighted order; `Ok(None)` when
/// there is none, an error only when nothing was fetched. A queue whose
/// rate limit held jobs back shortens `idle_wait` to when the next may start.
async fn fetch(
    queue: &RedisJobQueue,
    settings: &WorkerSettings,
    slots: usize,
    idle_wait: &mut Duration,
) -> Result<Option<Vec<LeasedJob>>, QueueError> {
    let mut jobs = Vec::new();
    let mut fetch_error = None;
    for q in weighted_order(&settings.queues) {
        match queue
            .fetch_batch(q, settings.lease, slots - jobs.len())
            .await
        {
            Ok(mut got) => {
                jobs.append(&mut got.jobs);
                if let Some(HeldBack::RateLimited(after)) = got.held_back {
                    *idle_wait = (*idle_wait).min(after);
                }
            }
            Err(e) => fetch_error = Some(e),
        }
        if jobs.len() == slots {
            break;
        }
    }
    match (jobs.is_empty(), fetch_error) {
        (true, Some(e)) => Err(e),
        (true, None) => Ok(None),
        (false, _) => Ok(Some(jobs)),
    }
}

//! One attempt of one job: run its handler under its lease, then record the
//! outcome (completions in batches, by the completer).

use super::*;

pub(super) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
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

/// How one attempt ended, before its outcome is recorded.
enum Ran {
    Finished(Result<(), JobFailure>),
    /// A heartbeat found the lease lost; the handler was dropped.
    LeaseLost,
    /// Shutdown's deadline passed; the handler was dropped.
    Interrupted,
}

/// Runs one attempt and records its outcome under its lease.
pub(super) async fn execute(
    shared: &Shared,
    job: LeasedJob,
    held: HeldLease,
    permit: OwnedSemaphorePermit,
) {
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
pub(super) async fn completer(queue: RedisJobQueue, mut done: mpsc::UnboundedReceiver<Completed>) {
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

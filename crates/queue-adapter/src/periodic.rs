//! Periodic jobs from cron expressions, enqueued once per tick across every
//! worker process: claiming a tick and enqueueing its job are one atomic
//! step ([`RedisJobQueue::enqueue_tick`]), so a tick is never claimed
//! without its job, and a failed attempt is retried without risking a
//! duplicate.

use crate::queue::{RedisJobQueue, TickOutcome};
use chrono::{DateTime, Utc};
use ports::{EnqueueJobError, NewJob};
use std::str::FromStr as _;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub(crate) struct Periodic {
    name: String,
    schedule: cron::Schedule,
    job: NewJob,
}

impl Periodic {
    pub(crate) fn new(name: &str, schedule: &str, job: NewJob) -> anyhow::Result<Self> {
        anyhow::ensure!(!name.is_empty(), "a periodic job needs a name");
        let schedule = cron::Schedule::from_str(schedule)
            .map_err(|e| anyhow::anyhow!("invalid cron expression {schedule:?} for {name}: {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            schedule,
            job,
        })
    }

    fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.after(&t).next()
    }
}

pub(crate) async fn scheduler(
    queue: RedisJobQueue,
    periodic: Vec<Periodic>,
    stop: CancellationToken,
) {
    let mut next: Vec<Option<DateTime<Utc>>> =
        periodic.iter().map(|p| p.next_after(Utc::now())).collect();
    loop {
        let Some(soonest) = next.iter().flatten().min().copied() else {
            return;
        };
        let wait = (soonest - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
        let now = Utc::now();
        for (p, due) in periodic.iter().zip(next.iter_mut()) {
            let Some(tick) = *due else { continue };
            if tick > now {
                continue;
            }
            *due = p.next_after(now);
            fire(&queue, p, tick.timestamp(), &stop).await;
        }
    }
}

/// Tries to enqueue one tick a few times (Redis may be briefly away); the
/// tick claim makes every try safe.
async fn fire(queue: &RedisJobQueue, p: &Periodic, tick: i64, stop: &CancellationToken) {
    let mut wait = Duration::from_millis(100);
    for attempt in 1..=5 {
        match queue.enqueue_tick(&p.name, tick, p.job.clone()).await {
            Ok(TickOutcome::Enqueued(id)) => {
                tracing::info!(periodic = %p.name, tick, job_id = %id, "periodic job enqueued");
                return;
            }
            // Another process enqueued this tick, or the job's own unique
            // key says the previous run is still live.
            Ok(TickOutcome::AlreadyEnqueued) | Err(EnqueueJobError::Duplicate { .. }) => return,
            Err(e @ EnqueueJobError::Invalid(_)) => {
                tracing::error!(periodic = %p.name, error = %e, "periodic job refused");
                return;
            }
            Err(e) if attempt < 5 => {
                tracing::debug!(periodic = %p.name, tick, error = %e, "retrying periodic tick");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => return,
                }
                wait *= 2;
            }
            Err(e) => {
                tracing::warn!(periodic = %p.name, tick, error = %e, "periodic tick not enqueued");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_expressions_parse_or_explain() {
        let job = NewJob::new("t", 1, &()).unwrap();
        let p = Periodic::new("every-5s", "*/5 * * * * *", job.clone()).unwrap();
        let t = Utc::now();
        let n = p.next_after(t).unwrap();
        assert!(n > t && (n - t).num_seconds() <= 5);
        let err = Periodic::new("bad", "every tuesday", job).unwrap_err();
        assert!(err.to_string().contains("bad"));
    }
}

//! `app jobs ...`: look at and repair the job queue.

use crate::settings::Settings;
use queue_adapter::RedisJobQueue;
use std::fmt::Write as _;

/// What `app jobs` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobsAction {
    /// Counts per queue.
    Stats,
    /// The most recent dead jobs.
    Dead { queue: Option<String>, limit: usize },
    /// Run one dead job (or all of them) again.
    Retry {
        id: Option<String>,
        all: bool,
        queue: Option<String>,
    },
    /// Delete a job wherever it is.
    Delete { id: String },
}

fn queue(settings: &Settings) -> anyhow::Result<RedisJobQueue> {
    let pool = queue_adapter::build_pool(&settings.redis.pool_settings())?;
    Ok(RedisJobQueue::new(pool, settings.redis.queue_settings()))
}

/// Runs `action` and returns what to print.
pub async fn run(settings: &Settings, action: JobsAction) -> anyhow::Result<String> {
    let q = queue(settings)?;
    let mut out = String::new();
    match action {
        JobsAction::Stats => {
            let queues = q.queues().await?;
            writeln!(
                out,
                "{:<16} {:>8} {:>9} {:>7} {:>7} {:>7} {:>10} {:>8}",
                "queue", "pending", "scheduled", "active", "retry", "dead", "processed", "failed"
            )?;
            if queues.is_empty() {
                writeln!(out, "(no queues yet)")?;
            }
            for name in queues {
                let s = q.stats(&name).await?;
                writeln!(
                    out,
                    "{:<16} {:>8} {:>9} {:>7} {:>7} {:>7} {:>10} {:>8}",
                    s.queue,
                    s.pending,
                    s.scheduled,
                    s.active,
                    s.retry,
                    s.dead,
                    s.processed,
                    s.failed
                )?;
            }
        }
        JobsAction::Dead { queue, limit } => {
            let dead = q.dead(queue.as_deref(), limit).await?;
            if dead.is_empty() {
                writeln!(out, "no dead jobs")?;
            }
            for d in dead {
                let when = chrono::DateTime::from_timestamp_millis(d.died_at_ms)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{}  {}  {}  attempts={}  died={}\n    error: {}",
                    d.id, d.queue, d.kind, d.attempts, when, d.last_error
                )?;
            }
        }
        JobsAction::Retry {
            id: Some(id),
            all: false,
            ..
        } => {
            if q.revive(&id).await? {
                writeln!(out, "job {id} will run again")?;
            } else {
                anyhow::bail!("job {id} is not in the dead set");
            }
        }
        JobsAction::Retry {
            all: true, queue, ..
        } => {
            let n = q.revive_all(queue.as_deref()).await?;
            writeln!(out, "{n} dead job(s) will run again")?;
        }
        JobsAction::Retry { .. } => anyhow::bail!("give a job id or --all"),
        JobsAction::Delete { id } => {
            if q.delete(&id).await? {
                writeln!(out, "job {id} deleted")?;
            } else {
                anyhow::bail!("no job {id}");
            }
        }
    }
    Ok(out)
}

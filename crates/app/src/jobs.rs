//! `app jobs ...`: look at and repair the job queue.

use crate::cli::JobsCommand;
use crate::settings::Settings;
use queue_adapter::{RateLimit, RedisJobQueue};
use std::fmt::Write as _;

fn queue(settings: &Settings) -> anyhow::Result<RedisJobQueue> {
    // A one-off command: its shared connection and one more.
    let pool = queue_adapter::build_pool(&settings.redis.pool_settings(2))?;
    Ok(RedisJobQueue::new(pool, settings.redis.queue_settings()))
}

/// Runs `action` and returns what to print.
pub async fn run(settings: &Settings, action: JobsCommand) -> anyhow::Result<String> {
    let q = queue(settings)?;
    let mut out = String::new();
    match action {
        JobsCommand::Stats => {
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
                let c = q.controls(&name).await?;
                let mut controls = Vec::new();
                if c.paused_since_ms.is_some() {
                    controls.push("PAUSED".to_owned());
                }
                if let Some(n) = c.concurrency {
                    controls.push(format!("concurrency {n}"));
                }
                if let Some(r) = c.rate {
                    controls.push(format!("rate {r}"));
                }
                writeln!(
                    out,
                    "{:<16} {:>8} {:>9} {:>7} {:>7} {:>7} {:>10} {:>8}  {}",
                    s.queue,
                    s.pending,
                    s.scheduled,
                    s.active,
                    s.retry,
                    s.dead,
                    s.processed,
                    s.failed,
                    controls.join(", ")
                )?;
            }
        }
        JobsCommand::Dead { queue, limit } => {
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
        JobsCommand::Retry {
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
        JobsCommand::Retry {
            all: true, queue, ..
        } => {
            let n = q.revive_all(queue.as_deref()).await?;
            writeln!(out, "{n} dead job(s) will run again")?;
        }
        JobsCommand::Retry { .. } => anyhow::bail!("give a job id or --all"),
        JobsCommand::Pause { queue } => {
            if q.pause(&queue).await? {
                writeln!(
                    out,
                    "queue {queue} paused: no worker starts its jobs until `app jobs resume {queue}`"
                )?;
            } else {
                writeln!(out, "queue {queue} was already paused")?;
            }
        }
        JobsCommand::Resume { queue } => {
            if q.resume(&queue).await? {
                writeln!(out, "queue {queue} resumed")?;
            } else {
                writeln!(out, "queue {queue} was not paused")?;
            }
        }
        JobsCommand::Limit {
            queue,
            concurrency,
            rate,
        } => {
            if concurrency.is_none() && rate.is_none() {
                anyhow::bail!(
                    "give --concurrency N (0: no cap) and/or --rate jobs/period (off: no limit)"
                );
            }
            let rate = match rate.as_deref() {
                None => None,
                Some("off") => Some(None),
                Some(r) => Some(Some(r.parse::<RateLimit>().map_err(anyhow::Error::msg)?)),
            };
            if let Some(n) = concurrency {
                q.set_concurrency(&queue, Some(n).filter(|n| *n > 0))
                    .await?;
            }
            if let Some(r) = rate {
                q.set_rate(&queue, r).await?;
            }
            let c = q.controls(&queue).await?;
            writeln!(
                out,
                "queue {queue}: concurrency {}, rate {}",
                c.concurrency
                    .map_or("unlimited".to_owned(), |n| n.to_string()),
                c.rate.map_or("unlimited".to_owned(), |r| r.to_string())
            )?;
        }
        JobsCommand::List {
            queue,
            state,
            cursor,
            limit,
        } => {
            let page = q.list(&queue, state, cursor.as_deref(), limit).await?;
            if page.jobs.is_empty() {
                writeln!(out, "no {} jobs in {queue}", state.as_str())?;
            }
            for j in &page.jobs {
                let at = chrono::DateTime::from_timestamp_millis(j.at_ms)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{}  {}  attempts={}/{}  at={}  payload={}",
                    j.id,
                    j.kind,
                    j.attempts,
                    j.max_retries + 1,
                    at,
                    j.payload
                )?;
                if let Some(e) = &j.last_error {
                    writeln!(out, "    error: {e}")?;
                }
            }
            if let Some(next) = page.next {
                writeln!(out, "next page: --cursor {next}")?;
            }
        }
        JobsCommand::Delete { id } => {
            if q.delete(&id).await? {
                writeln!(out, "job {id} deleted")?;
            } else {
                anyhow::bail!("no job {id}");
            }
        }
    }
    Ok(out)
}

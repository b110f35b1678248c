//! `RedisJobQueue`: enqueueing (`ports::JobQueue`), the state changes the
//! worker runtime makes, and the operations of `app jobs`.

use crate::redis::SharedConnection;
use crate::scripts;
use async_trait::async_trait;
use deadpool_redis::Pool;
use deadpool_redis::redis::{self, AsyncCommands as _, RedisError, Script};
use ports::{EnqueueJobError, JobId, JobQueue, NewJob};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Where the queue lives and how much history it keeps.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Prefix of every key (`<redis prefix>q:`).
    pub prefix: String,
    /// Dead jobs kept at most (oldest dropped first).
    pub dead_max_size: u64,
    /// Dead jobs older than this are dropped.
    pub dead_max_age: Duration,
}

impl QueueSettings {
    pub fn new(redis_prefix: &str) -> Self {
        Self {
            prefix: format!("{redis_prefix}q:"),
            dead_max_size: 10_000,
            dead_max_age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// An infrastructure failure talking to the queue's Redis.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue store unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    #[error("queue error: {0:#}")]
    Unknown(anyhow::Error),
}

impl From<RedisError> for QueueError {
    fn from(e: RedisError) -> Self {
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
        {
            QueueError::Unavailable(e.into())
        } else {
            QueueError::Unknown(e.into())
        }
    }
}

impl From<deadpool_redis::PoolError> for QueueError {
    fn from(e: deadpool_redis::PoolError) -> Self {
        QueueError::Unavailable(anyhow::Error::new(e).context("no Redis connection"))
    }
}

/// A job a worker holds a lease on.
#[derive(Debug, Clone)]
pub struct LeasedJob {
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    pub version: u16,
    pub payload: serde_json::Value,
    /// This attempt's number (1 for the first).
    pub attempt: u32,
    pub max_retries: u32,
    pub timeout: Duration,
    /// When it became ready to run (ms since the epoch).
    pub ready_at_ms: i64,
}

/// Counts per queue, for `app jobs stats` and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    pub queue: String,
    pub pending: u64,
    pub scheduled: u64,
    pub active: u64,
    pub retry: u64,
    pub dead: u64,
    pub processed: u64,
    pub failed: u64,
}

/// A job in the dead set.
#[derive(Debug, Clone, Serialize)]
pub struct DeadJob {
    pub id: String,
    pub queue: String,
    pub kind: String,
    pub attempts: u32,
    pub last_error: String,
    pub died_at_ms: i64,
    pub payload: String,
}

struct Scripts {
    enqueue: Script,
    fetch: Script,
    forward: Script,
    heartbeat: Script,
    complete: Script,
    fail: Script,
    recover: Script,
    requeue: Script,
    revive: Script,
    delete: Script,
}

struct Inner {
    conn: SharedConnection,
    settings: QueueSettings,
    scripts: Scripts,
}

/// The job queue on Redis. Cheap to clone.
#[derive(Clone)]
pub struct RedisJobQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisJobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisJobQueue")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Queue names: 1 to 64 of `[a-z0-9_-]`.
pub fn valid_queue_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl RedisJobQueue {
    pub fn new(pool: Pool, settings: QueueSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                conn: SharedConnection::new(pool),
                settings,
                scripts: Scripts {
                    enqueue: Script::new(scripts::ENQUEUE),
                    fetch: Script::new(scripts::FETCH),
                    forward: Script::new(scripts::FORWARD),
                    heartbeat: Script::new(scripts::HEARTBEAT),
                    complete: Script::new(&scripts::complete()),
                    fail: Script::new(&scripts::fail()),
                    recover: Script::new(&scripts::recover()),
                    requeue: Script::new(scripts::REQUEUE),
                    revive: Script::new(scripts::REVIVE),
                    delete: Script::new(&scripts::delete()),
                },
            }),
        }
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.inner.settings
    }

    fn job_prefix(&self) -> String {
        format!("{}job:", self.inner.settings.prefix)
    }

    fn unique_prefix(&self) -> String {
        format!("{}unique:", self.inner.settings.prefix)
    }

    pub(crate) fn key(&self, queue: &str, what: &str) -> String {
        format!("{}{queue}:{what}", self.inner.settings.prefix)
    }

    fn queues_key(&self) -> String {
        format!("{}queues", self.inner.settings.prefix)
    }

    /// Runs `f` on the shared connection; a connection-level failure drops it.
    async fn with_conn<T, F, Fut>(&self, f: F) -> Result<T, QueueError>
    where
        F: FnOnce(redis::aio::MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let conn = self.inner.conn.get().await?;
        match f(conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                let e = QueueError::from(e);
                if matches!(e, QueueError::Unavailable(_)) {
                    self.inner.conn.reset().await;
                }
                Err(e)
            }
        }
    }

    /// Leases the oldest ready job of `queue` for `lease`.
    pub async fn fetch(
        &self,
        queue: &str,
        lease: Duration,
    ) -> Result<Option<LeasedJob>, QueueError> {
        Ok(self.fetch_many(queue, lease, 1).await?.pop())
    }

    /// Leases up to `max` of the oldest ready jobs of `queue`, in one round trip.
    pub async fn fetch_many(
        &self,
        queue: &str,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<LeasedJob>, QueueError> {
        let (pending, active, prefix) = (
            self.key(queue, "pending"),
            self.key(queue, "active"),
            self.job_prefix(),
        );
        let reply: Vec<(String, HashMap<String, String>)> = self
            .with_conn(|mut c| async move {
                self.inner
                    .scripts
                    .fetch
                    .key(pending)
                    .key(active)
                    .arg(now_ms())
                    .arg(ms(lease))
                    .arg(prefix)
                    .arg(max.max(1))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        reply
            .into_iter()
            .map(|(id, fields)| {
                let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
                let num = |k: &str| get(k).parse::<i64>().unwrap_or(0);
                Ok(LeasedJob {
                    id: id
                        .parse()
                        .map_err(|e| QueueError::Unknown(anyhow::anyhow!("job id {id:?}: {e}")))?,
                    queue: queue.to_owned(),
                    kind: get("kind").to_owned(),
                    version: u16::try_from(num("version")).unwrap_or(0),
                    payload: serde_json::from_str(get("payload"))
                        .unwrap_or(serde_json::Value::Null),
                    attempt: u32::try_from(num("attempt")).unwrap_or(1),
                    max_retries: u32::try_from(num("max_retries")).unwrap_or(0),
                    timeout: Duration::from_millis(u64::try_from(num("timeout_ms")).unwrap_or(0)),
                    ready_at_ms: num("ready_at"),
                })
            })
            .collect()
    }

    /// Moves due scheduled and retry jobs of `queue` to pending.
    pub async fn forward(&self, queue: &str) -> Result<u64, QueueError> {
        let keys = [
            self.key(queue, "scheduled"),
            self.key(queue, "retry"),
            self.key(queue, "pending"),
            self.key(queue, "wake"),
        ];
        let prefix = self.job_prefix();
        self.with_conn(|mut c| async move {
            self.inner
                .scripts
                .forward
                .key(&keys[..])
                .arg(now_ms())
                .arg(1000)
                .arg(prefix)
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    /// Extends the leases of `ids` (those still active) to now + `lease`.
    pub async fn heartbeat(
        &self,
        queue: &str,
        ids: &[JobId],
        lease: Duration,
    ) -> Result<u64, QueueError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let active = self.key(queue, "active");
        let deadline = now_ms() + ms(lease);
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        self.with_conn(|mut c| async move {
            self.inner
                .scripts
                .heartbeat
                .key(active)
                .arg(deadline)
                .arg(&ids[..])
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    /// The job succeeded: it is deleted and its unique key released.
    pub async fn complete(&self, queue: &str, id: &JobId) -> Result<bool, QueueError> {
        Ok(self.complete_many(queue, std::slice::from_ref(id)).await? == 1)
    }

    /// Completes several jobs of `queue` in one round trip. Returns how many existed.
    pub async fn complete_many(&self, queue: &str, ids: &[JobId]) -> Result<u64, QueueError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let keys = [self.key(queue, "active"), self.key(queue, "processed")];
        let (prefix, uprefix) = (self.job_prefix(), self.unique_prefix());
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        self.with_conn(|mut c| async move {
            self.inner
                .scripts
                .complete
                .key(&keys[..])
                .arg(prefix)
                .arg(uprefix)
                .arg(&ids[..])
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    /// The attempt failed: retry at `retry_at_ms`, or (with `None`) the job dies.
    /// Returns whether the job went to the dead set.
    pub async fn fail(
        &self,
        queue: &str,
        id: &JobId,
        error: &str,
        retry_at_ms: Option<i64>,
    ) -> Result<bool, QueueError> {
        let keys = [
            self.key(queue, "active"),
            self.key(queue, "retry"),
            self.key(queue, "dead"),
            self.key(queue, "failed"),
        ];
        let (prefix, uprefix) = (self.job_prefix(), self.unique_prefix());
        let s = &self.inner.settings;
        let error: String = error.chars().take(4000).collect();
        let n: i64 = self
            .with_conn(|mut c| async move {
                self.inner
                    .scripts
                    .fail
                    .key(&keys[..])
                    .arg(id.to_string())
                    .arg(prefix)
                    .arg(uprefix)
                    .arg(now_ms())
                    .arg(error)
                    .arg(retry_at_ms.unwrap_or(0))
                    .arg(s.dead_max_size)
                    .arg(ms(s.dead_max_age))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(n == 2)
    }

    /// Sends jobs whose lease ran out back to retry (or to the dead set).
    /// Returns (retried, dead).
    pub async fn recover(&self, queue: &str) -> Result<(u64, u64), QueueError> {
        let keys = [
            self.key(queue, "active"),
            self.key(queue, "retry"),
            self.key(queue, "dead"),
            self.key(queue, "failed"),
        ];
        let (prefix, uprefix) = (self.job_prefix(), self.unique_prefix());
        let s = &self.inner.settings;
        self.with_conn(|mut c| async move {
            self.inner
                .scripts
                .recover
                .key(&keys[..])
                .arg(now_ms())
                .arg(prefix)
                .arg(uprefix)
                .arg(1000)
                .arg(s.dead_max_size)
                .arg(ms(s.dead_max_age))
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    /// Puts an unfinished job back at the front of its queue (shutdown).
    pub async fn requeue(&self, queue: &str, id: &JobId) -> Result<bool, QueueError> {
        let keys = [
            self.key(queue, "active"),
            self.key(queue, "pending"),
            self.key(queue, "wake"),
        ];
        let prefix = self.job_prefix();
        let n: i64 = self
            .with_conn(|mut c| async move {
                self.inner
                    .scripts
                    .requeue
                    .key(&keys[..])
                    .arg(id.to_string())
                    .arg(prefix)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(n == 1)
    }

    /// Waits up to `timeout` for a wake-up token on any of `queues` (an
    /// enqueue or a forward pushes one). Uses a pooled connection of its own.
    pub async fn wait_for_work(
        &self,
        queues: &[String],
        timeout: Duration,
    ) -> Result<(), QueueError> {
        let keys: Vec<String> = queues.iter().map(|q| self.key(q, "wake")).collect();
        let mut conn = self.inner.conn.pool().get().await?;
        let _: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(&keys[..])
            .arg(timeout.as_secs_f64())
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Claims tick `tick` of periodic job `name` for this process. Exactly one
    /// caller per tick gets `true` (the claim is kept a day).
    pub async fn claim_tick(&self, name: &str, tick: i64) -> Result<bool, QueueError> {
        let key = format!("{}cron:{name}:{tick}", self.inner.settings.prefix);
        let set: Option<String> = self
            .with_conn(|mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(1)
                    .arg("NX")
                    .arg("EX")
                    .arg(86_400)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }

    /// Every queue that ever had a job.
    pub async fn queues(&self) -> Result<Vec<String>, QueueError> {
        let key = self.queues_key();
        let mut names: Vec<String> = self
            .with_conn(|mut c| async move { c.smembers(key).await })
            .await?;
        names.sort();
        Ok(names)
    }

    pub async fn stats(&self, queue: &str) -> Result<QueueStats, QueueError> {
        let mut pipe = redis::pipe();
        pipe.llen(self.key(queue, "pending"))
            .zcard(self.key(queue, "scheduled"))
            .zcard(self.key(queue, "active"))
            .zcard(self.key(queue, "retry"))
            .zcard(self.key(queue, "dead"))
            .get(self.key(queue, "processed"))
            .get(self.key(queue, "failed"));
        type Row = (u64, u64, u64, u64, u64, Option<u64>, Option<u64>);
        let (pending, scheduled, active, retry, dead, processed, failed): Row = self
            .with_conn(|mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        Ok(QueueStats {
            queue: queue.to_owned(),
            pending,
            scheduled,
            active,
            retry,
            dead,
            processed: processed.unwrap_or(0),
            failed: failed.unwrap_or(0),
        })
    }

    /// The most recent dead jobs of `queue` (or of every queue).
    pub async fn dead(
        &self,
        queue: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadJob>, QueueError> {
        let queues = match queue {
            Some(q) => vec![q.to_owned()],
            None => self.queues().await?,
        };
        let mut out = Vec::new();
        for q in queues {
            let key = self.key(&q, "dead");
            let lim = isize::try_from(limit).unwrap_or(isize::MAX).max(1) - 1;
            let ids: Vec<(String, f64)> = self
                .with_conn(|mut c| async move { c.zrevrange_withscores(key, 0, lim).await })
                .await?;
            for (id, died) in ids {
                let key = format!("{}{id}", self.job_prefix());
                let h: HashMap<String, String> = self
                    .with_conn(|mut c| async move { c.hgetall(key).await })
                    .await?;
                let get = |k: &str| h.get(k).cloned().unwrap_or_default();
                out.push(DeadJob {
                    id,
                    queue: q.clone(),
                    kind: get("kind"),
                    attempts: get("attempt").parse().unwrap_or(0),
                    last_error: get("last_error"),
                    died_at_ms: died as i64,
                    payload: get("payload"),
                });
            }
        }
        out.sort_by_key(|d| std::cmp::Reverse(d.died_at_ms));
        out.truncate(limit);
        Ok(out)
    }

    async fn queue_of(&self, id: &str) -> Result<Option<String>, QueueError> {
        let key = format!("{}{id}", self.job_prefix());
        self.with_conn(|mut c| async move { c.hget(key, "queue").await })
            .await
    }

    /// Runs a dead job again with fresh retries. Returns false if `id` is not dead.
    pub async fn revive(&self, id: &str) -> Result<bool, QueueError> {
        let Some(queue) = self.queue_of(id).await? else {
            return Ok(false);
        };
        let keys = [
            self.key(&queue, "dead"),
            self.key(&queue, "pending"),
            self.key(&queue, "wake"),
        ];
        let prefix = self.job_prefix();
        let n: i64 = self
            .with_conn(|mut c| async move {
                self.inner
                    .scripts
                    .revive
                    .key(&keys[..])
                    .arg(id)
                    .arg(prefix)
                    .arg(now_ms())
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(n == 1)
    }

    /// Revives every dead job of `queue` (or of every queue). Returns how many.
    pub async fn revive_all(&self, queue: Option<&str>) -> Result<u64, QueueError> {
        let mut n = 0;
        // Bounded: at most the dead set's cap per call.
        for job in self
            .dead(queue, self.inner.settings.dead_max_size as usize)
            .await?
        {
            if self.revive(&job.id).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Deletes a job wherever it is. Returns false if there was none.
    pub async fn delete(&self, id: &str) -> Result<bool, QueueError> {
        let Some(queue) = self.queue_of(id).await? else {
            return Ok(false);
        };
        let keys: Vec<String> = ["pending", "scheduled", "retry", "active", "dead"]
            .iter()
            .map(|w| self.key(&queue, w))
            .collect();
        let (prefix, uprefix) = (self.job_prefix(), self.unique_prefix());
        let n: i64 = self
            .with_conn(|mut c| async move {
                self.inner
                    .scripts
                    .delete
                    .key(&keys[..])
                    .arg(id)
                    .arg(prefix)
                    .arg(uprefix)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(n == 1)
    }
}

#[async_trait]
impl JobQueue for RedisJobQueue {
    async fn enqueue(&self, job: NewJob) -> Result<JobId, EnqueueJobError> {
        if job.kind.is_empty() || job.kind.len() > 128 {
            return Err(EnqueueJobError::Invalid(
                "a job kind is 1 to 128 characters".into(),
            ));
        }
        if !valid_queue_name(&job.queue) {
            return Err(EnqueueJobError::Invalid(format!(
                "invalid queue name {:?}",
                job.queue
            )));
        }
        let id = JobId::new();
        let now = now_ms();
        let (unique_key, unique_ttl) = match &job.unique {
            Some(u) if !u.key.is_empty() => (u.key.clone(), ms(u.ttl).max(1)),
            Some(_) => return Err(EnqueueJobError::Invalid("empty unique key".into())),
            None => (String::new(), 0),
        };
        let payload = serde_json::to_string(&job.payload)
            .map_err(|e| EnqueueJobError::Invalid(e.to_string()))?;
        let fields: Vec<(&str, String)> = vec![
            ("kind", job.kind.clone()),
            ("version", job.version.to_string()),
            ("payload", payload),
            ("queue", job.queue.clone()),
            ("max_retries", job.max_retries.to_string()),
            ("timeout_ms", ms(job.timeout).to_string()),
            ("unique_key", unique_key.clone()),
            ("enqueued_at", now.to_string()),
            ("attempt", "0".into()),
        ];
        let keys = [
            format!("{}{id}", self.job_prefix()),
            self.key(&job.queue, "pending"),
            self.key(&job.queue, "scheduled"),
            format!("{}{}", self.unique_prefix(), unique_key),
            self.queues_key(),
            self.key(&job.queue, "wake"),
        ];
        let run_at = job.run_at.map_or(0, |t| t.timestamp_millis());
        let queue = job.queue.clone();
        let added: i64 = self
            .with_conn(|mut c| async move {
                let mut inv = self.inner.scripts.enqueue.prepare_invoke();
                inv.key(&keys[..])
                    .arg(id.to_string())
                    .arg(&queue)
                    .arg(now)
                    .arg(run_at)
                    .arg(unique_ttl);
                for (k, v) in &fields {
                    inv.arg(*k).arg(v);
                }
                inv.invoke_async(&mut c).await
            })
            .await
            .map_err(|e| match e {
                QueueError::Unavailable(e) => EnqueueJobError::Unavailable(e),
                QueueError::Unknown(e) => EnqueueJobError::Unknown(e),
            })?;
        if added == 0 {
            return Err(EnqueueJobError::Duplicate { key: unique_key });
        }
        metrics::counter!("jobs_enqueued_total", "queue" => job.queue.clone(), "kind" => job.kind.clone()).increment(1);
        Ok(id)
    }
}

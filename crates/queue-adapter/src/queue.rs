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

/// Proof that a worker holds a job's lease: the job and the fencing number
/// FETCH gave this lease. Every state change a worker makes carries it; one
/// whose lease has since been recovered (or fetched again) changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    pub id: JobId,
    /// Increases every time the job is fetched.
    pub token: u64,
}

/// What a state change made by a lease holder did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The change was made.
    Applied,
    /// The lease had been recovered, the job fetched again or deleted:
    /// nothing changed. Not an error; the job is someone else's now.
    LeaseLost,
}

/// What recording a failed attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// The job waits in the retry set.
    Retry,
    /// The job is in the dead set.
    Dead,
    /// The lease was lost: nothing changed.
    LeaseLost,
}

/// A job a worker holds a lease on.
#[derive(Debug, Clone)]
pub struct LeasedJob {
    pub id: JobId,
    /// This lease's fencing number (see [`Lease`]).
    pub token: u64,
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

impl LeasedJob {
    /// The lease to present when changing this job's state.
    pub fn lease(&self) -> Lease {
        Lease {
            id: self.id,
            token: self.token,
        }
    }
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

fn parse_id(id: &str) -> Result<JobId, QueueError> {
    id.parse()
        .map_err(|e| QueueError::Unknown(anyhow::anyhow!("job id {id:?}: {e}")))
}

/// `id, token, id, token, ...` for the scripts that check leases.
fn lease_args(leases: &[Lease]) -> Vec<String> {
    leases
        .iter()
        .flat_map(|l| [l.id.to_string(), l.token.to_string()])
        .collect()
}

/// How long a periodic tick's claim is kept.
const TICK_CLAIM_TTL_SECS: i64 = 86_400;

/// What enqueueing a periodic tick did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickOutcome {
    /// The tick's job was enqueued.
    Enqueued(JobId),
    /// This tick had already been enqueued (by this or another process).
    AlreadyEnqueued,
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
                    enqueue: Script::new(&scripts::enqueue()),
                    fetch: Script::new(&scripts::fetch()),
                    forward: Script::new(&scripts::forward()),
                    heartbeat: Script::new(&scripts::heartbeat()),
                    complete: Script::new(&scripts::complete()),
                    fail: Script::new(&scripts::fail()),
                    recover: Script::new(&scripts::recover()),
                    requeue: Script::new(&scripts::requeue()),
                    revive: Script::new(&scripts::revive()),
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

    /// Leases up to `max` of the oldest ready jobs of `queue`, in one round
    /// trip. Each lease gets a fresh fencing number ([`LeasedJob::token`]).
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
                    id: parse_id(&id)?,
                    token: get("lease").parse().map_err(|e| {
                        QueueError::Unknown(anyhow::anyhow!("lease of job {id}: {e}"))
                    })?,
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
                .arg(1000)
                .arg(prefix)
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    /// Extends `leases` (those still held) to now + `lease`. Returns the
    /// leases that are lost: their jobs were recovered, fetched again by
    /// another worker, or deleted, and their handlers should stop.
    pub async fn heartbeat(
        &self,
        queue: &str,
        leases: &[Lease],
        lease: Duration,
    ) -> Result<Vec<Lease>, QueueError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let (active, prefix) = (self.key(queue, "active"), self.job_prefix());
        let args = lease_args(leases);
        let lost: Vec<String> = self
            .with_conn(|mut c| async move {
                self.inner
                    .scripts
                    .heartbeat
                    .key(active)
                    .arg(ms(lease))
                    .arg(prefix)
                    .arg(&args[..])
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(leases
            .iter()
            .filter(|l| lost.iter().any(|id| *id == l.id.to_string()))
            .copied()
            .collect())
    }

    /// The job succeeded: it is deleted and its unique key released, if
    /// `lease` is still held.
    pub async fn complete(&self, queue: &str, lease: Lease) -> Result<LeaseOutcome, QueueError> {
        Ok(self
            .complete_many(queue, std::slice::from_ref(&lease))
            .await?
            .pop()
            .unwrap_or(LeaseOutcome::LeaseLost))
    }

    /// Completes several jobs of `queue` in one round trip. Returns one
    /// outcome per lease, in order.
    pub async fn complete_many(
        &self,
        queue: &str,
        leases: &[Lease],
    ) -> Result<Vec<LeaseOutcome>, QueueError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let keys = [self.key(queue, "active"), self.key(queue, "processed")];
        let (prefix, uprefix) = (self.job_prefix(), self.unique_prefix());
        let args = lease_args(leases);
        let done: Vec<i64> = self
            .with_conn(|mut c| async move {
                self.inner
                    .scripts
                    .complete
                    .key(&keys[..])
                    .arg(prefix)
                    .arg(uprefix)
                    .arg(&args[..])
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(done
            .into_iter()
            .map(|n| {
                if n == 1 {
                    LeaseOutcome::Applied
                } else {
                    LeaseOutcome::LeaseLost
                }
            })
            .collect())
    }

    /// The attempt failed: retry `retry_after` from now (measured by Redis'
    /// clock), or (with `None`) the job dies. Nothing changes if `lease` is
    /// no longer held.
    pub async fn fail(
        &self,
        queue: &str,
        lease: Lease,
        error: &str,
        retry_after: Option<Duration>,
    ) -> Result<FailOutcome, QueueError> {
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
                    .arg(lease.id.to_string())
                    .arg(prefix)
                    .arg(uprefix)
                    .arg(lease.token)
                    .arg(error)
                    .arg(retry_after.map_or(-1, ms))
                    .arg(s.dead_max_size)
                    .arg(ms(s.dead_max_age))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(match n {
            1 => FailOutcome::Retry,
            2 => FailOutcome::Dead,
            _ => FailOutcome::LeaseLost,
        })
    }

    /// Sends jobs whose lease ran out back to retry after the backoff
    /// `retry_base * 2^(attempt-1)` (capped at `retry_cap`, equal jitter),
    /// or to the dead set when out of retries; then caps the dead set by
    /// size and age. Returns (retried, dead).
    pub async fn recover(
        &self,
        queue: &str,
        retry_base: Duration,
        retry_cap: Duration,
    ) -> Result<(u64, u64), QueueError> {
        let keys = [
            self.key(queue, "active"),
            self.key(queue, "retry"),
            self.key(queue, "dead"),
            self.key(queue, "failed"),
        ];
        let (prefix, uprefix) = (self.job_prefix(), self.unique_prefix());
        let s = &self.inner.settings;
        let seed: u32 = rand::random();
        self.with_conn(|mut c| async move {
            self.inner
                .scripts
                .recover
                .key(&keys[..])
                .arg(prefix)
                .arg(uprefix)
                .arg(1000)
                .arg(s.dead_max_size)
                .arg(ms(s.dead_max_age))
                .arg(ms(retry_base))
                .arg(ms(retry_cap))
                .arg(seed)
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    /// Puts an unfinished job back at the front of its queue (shutdown), if
    /// `lease` is still held; the attempt does not count.
    pub async fn requeue(&self, queue: &str, lease: Lease) -> Result<LeaseOutcome, QueueError> {
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
                    .arg(lease.id.to_string())
                    .arg(prefix)
                    .arg(lease.token)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(if n == 1 {
            LeaseOutcome::Applied
        } else {
            LeaseOutcome::LeaseLost
        })
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
    ///
    /// Its unique key (released when it died) is taken again if it is free.
    /// If a newer job holds it meanwhile, the revived job still runs (the
    /// operator asked for it) but without the key, and it never releases
    /// the newer job's key.
    pub async fn revive(&self, id: &str) -> Result<bool, QueueError> {
        let Some(queue) = self.queue_of(id).await? else {
            return Ok(false);
        };
        let keys = [
            self.key(&queue, "dead"),
            self.key(&queue, "pending"),
            self.key(&queue, "wake"),
        ];
        let (prefix, uprefix) = (self.job_prefix(), self.unique_prefix());
        let n: i64 = self
            .with_conn(|mut c| async move {
                self.inner
                    .scripts
                    .revive
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

    /// Revives every dead job of `queue` (or of every queue). Returns how many.
    pub async fn revive_all(&self, queue: Option<&str>) -> Result<u64, QueueError> {
        let queues = match queue {
            Some(q) => vec![q.to_owned()],
            None => self.queues().await?,
        };
        // Bounded: at most the dead set's cap per queue and call.
        let last = isize::try_from(self.inner.settings.dead_max_size)
            .unwrap_or(isize::MAX)
            .max(1)
            - 1;
        let mut n = 0;
        for q in queues {
            let key = self.key(&q, "dead");
            let ids: Vec<String> = self
                .with_conn(|mut c| async move { c.zrange(key, 0, last).await })
                .await?;
            for id in ids {
                if self.revive(&id).await? {
                    n += 1;
                }
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

impl RedisJobQueue {
    /// Enqueues tick `tick` (a Unix time in seconds) of periodic job `name`:
    /// claiming the tick and storing the job are one atomic step, so a tick
    /// is enqueued once however many processes (or retries after a failed
    /// call) try, and a failed attempt can simply be tried again.
    pub async fn enqueue_tick(
        &self,
        name: &str,
        tick: i64,
        job: NewJob,
    ) -> Result<TickOutcome, EnqueueJobError> {
        let claim = format!("{}cron:{name}:{tick}", self.inner.settings.prefix);
        Ok(match self.store(job, Some(claim)).await? {
            Some(id) => TickOutcome::Enqueued(id),
            None => TickOutcome::AlreadyEnqueued,
        })
    }

    /// Validates and stores `job`, claiming `claim` in the same step if
    /// given. `None` when `claim` was already taken.
    async fn store(
        &self,
        job: NewJob,
        claim: Option<String>,
    ) -> Result<Option<JobId>, EnqueueJobError> {
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
            ("unique_ttl_ms", unique_ttl.to_string()),
            ("attempt", "0".into()),
            ("lease", "0".into()),
        ];
        let claim_ttl = if claim.is_some() {
            TICK_CLAIM_TTL_SECS
        } else {
            0
        };
        let keys = [
            format!("{}{id}", self.job_prefix()),
            self.key(&job.queue, "pending"),
            self.key(&job.queue, "scheduled"),
            format!("{}{}", self.unique_prefix(), unique_key),
            self.queues_key(),
            self.key(&job.queue, "wake"),
            // A key name is required either way; unused without a claim.
            claim.unwrap_or_else(|| format!("{}cron:-", self.inner.settings.prefix)),
        ];
        let run_at = job.run_at.map_or(0, |t| t.timestamp_millis());
        let queue = job.queue.clone();
        let added: i64 = self
            .with_conn(|mut c| async move {
                let mut inv = self.inner.scripts.enqueue.prepare_invoke();
                inv.key(&keys[..])
                    .arg(id.to_string())
                    .arg(&queue)
                    .arg(run_at)
                    .arg(unique_ttl)
                    .arg(claim_ttl);
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
        match added {
            0 => Err(EnqueueJobError::Duplicate { key: unique_key }),
            2 => Ok(None),
            _ => {
                metrics::counter!("jobs_enqueued_total", "queue" => job.queue.clone(), "kind" => job.kind.clone()).increment(1);
                Ok(Some(id))
            }
        }
    }
}

#[async_trait]
impl JobQueue for RedisJobQueue {
    async fn enqueue(&self, job: NewJob) -> Result<JobId, EnqueueJobError> {
        match self.store(job, None).await? {
            Some(id) => Ok(id),
            None => Err(EnqueueJobError::Unknown(anyhow::anyhow!(
                "enqueue without a tick claim reported a claimed tick"
            ))),
        }
    }
}

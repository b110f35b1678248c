//! `RedisJobQueue`: enqueueing (`ports::JobQueue`), the state changes the
//! worker runtime makes, and the operations of `app jobs`.
//!
//! # Layout
//!
//! - this file: the queue's keys, connection and scripts;
//! - `types.rs`: leases, outcomes and counts;
//! - `enqueue.rs`: storing jobs (and periodic ticks);
//! - `running.rs`: what workers do (fetch, heartbeat, complete, fail,
//!   recover, forward);
//! - `admin.rs`: what `app jobs` does (stats, dead jobs, revive, delete);
//! - `controls.rs`: pause and resume, concurrency cap, rate limit;
//! - `listing.rs`: the jobs of a queue in one state, a page at a time;
//! - `operator.rs`: one job's detail, run now, by kind; `ports::QueueAdmin`.

mod admin;
mod controls;
mod enqueue;
mod listing;
mod operator;
mod running;
mod stored;
mod types;

pub use listing::MAX_PAGE;
use stored::Body;
pub use types::*;

use crate::redis::{Conn, PoolError, RedisPool, SharedConnection};
use crate::scripts;
use async_trait::async_trait;
use deadpool_redis::redis::{self, AsyncCommands as _, RedisError, Script};
use ports::durability::{KnownReplicas, ReplicaWait, check_acks, connected_replicas};
use ports::{CancelJobsError, CancelledJobs, EnqueueJobError, JobId, JobQueue, NewJob, OwnedJob};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// The replicas an enqueue and a finished job's removal wait for
    /// (`WAIT`), so a failover cannot lose them.
    pub replica_wait: ReplicaWait,
}

impl QueueSettings {
    pub fn new(redis_prefix: &str) -> Self {
        Self {
            prefix: format!("{redis_prefix}q:"),
            dead_max_size: 10_000,
            dead_max_age: Duration::from_secs(30 * 24 * 3600),
            replica_wait: ReplicaWait::default(),
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
    /// The request itself is wrong (a bad queue name, state or cursor).
    #[error("{0}")]
    Invalid(String),
}

impl From<RedisError> for QueueError {
    fn from(e: RedisError) -> Self {
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_cluster_error()
        {
            QueueError::Unavailable(e.into())
        } else {
            QueueError::Unknown(e.into())
        }
    }
}

impl From<PoolError> for QueueError {
    fn from(e: PoolError) -> Self {
        QueueError::Unavailable(anyhow::Error::new(e).context("no Redis connection"))
    }
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
    cancel_owned: Script,
    resume: Script,
    run_now: Script,
}

/// What the last group `WAIT` settled: the writes up to ticket `upto`, on
/// connection `conn`, acknowledged by `acked` replicas.
#[derive(Debug, Default, Clone, Copy)]
struct Settled {
    upto: u64,
    conn: u64,
    acked: u32,
}

/// The durable writes' shared `WAIT`s.
#[derive(Debug, Default)]
struct GroupWait {
    /// One `WAIT` on its way at a time.
    turn: tokio::sync::Mutex<()>,
    /// Tickets handed out: one per durable write, once its reply is in.
    issued: AtomicU64,
    last: std::sync::Mutex<Settled>,
}

impl GroupWait {
    fn last(&self) -> Settled {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn settle(&self, s: Settled) {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = s;
    }
}

struct Inner {
    conn: SharedConnection,
    group: GroupWait,
    /// The primary's connected replicas, last read.
    replicas: KnownReplicas,
    /// On a Redis Cluster every key of a queue carries the queue's hash tag.
    cluster: bool,
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

/// Queue names: 1 to 64 of `[a-z0-9_-]`.
pub fn valid_queue_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl RedisJobQueue {
    pub fn new(pool: RedisPool, settings: QueueSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                cluster: pool.is_cluster(),
                conn: SharedConnection::new(pool),
                replicas: KnownReplicas::default(),
                group: GroupWait::default(),
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
                    cancel_owned: Script::new(&scripts::cancel_owned()),
                    resume: Script::new(&scripts::resume()),
                    run_now: Script::new(&scripts::run_now()),
                },
            }),
        }
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.inner.settings
    }

    /// What every key of `queue` starts with: `P Q:`, or on a Redis
    /// Cluster `{P Q}:`, a hash tag that puts all of them (its jobs, unique
    /// keys and tick claims included) in one slot, so every script touches
    /// one slot and different queues spread over the cluster's nodes.
    fn queue_prefix(&self, queue: &str) -> String {
        let p = &self.inner.settings.prefix;
        if self.inner.cluster {
            format!("{{{p}{queue}}}:")
        } else {
            format!("{p}{queue}:")
        }
    }

    /// Where `queue`'s job hashes are: `P job:<id>` on one Redis (as
    /// before queues had hash tags), `{P Q}:job:<id>` on a cluster.
    fn job_prefix(&self, queue: &str) -> String {
        self.shared_prefix(queue, "job:")
    }

    fn unique_prefix(&self, queue: &str) -> String {
        self.shared_prefix(queue, "unique:")
    }

    fn shared_prefix(&self, queue: &str, what: &str) -> String {
        if self.inner.cluster {
            format!("{}{what}", self.queue_prefix(queue))
        } else {
            format!("{}{what}", self.inner.settings.prefix)
        }
    }

    pub(crate) fn key(&self, queue: &str, what: &str) -> String {
        format!("{}{what}", self.queue_prefix(queue))
    }

    /// The keys `wheres` of `queue`, in order (a script's KEYS).
    pub(crate) fn keys(&self, queue: &str, wheres: &[&str]) -> Vec<String> {
        wheres.iter().map(|w| self.key(queue, w)).collect()
    }

    fn queues_key(&self) -> String {
        format!("{}queues", self.inner.settings.prefix)
    }

    /// Runs `f` on the shared connection; a connection-level failure drops it.
    /// Runs one of the queue's scripts (`self.inner.scripts.x.key(..).arg(..)`).
    async fn run_script<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, QueueError> {
        self.with_conn(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await
    }

    /// Runs one of the scripts whose loss in a failover would break a
    /// promise (an enqueue, a finished job's removal), then waits for the
    /// replicas `QueueSettings::replica_wait` asks for, on the same
    /// connection (a `WAIT` covers the writes of its own connection only:
    /// if that connection breaks in between, the outcome is unknown and
    /// the caller gets `Unavailable`). `write` names it in the metrics.
    async fn run_durable_script<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
        write: &'static str,
    ) -> Result<T, QueueError> {
        let wait = self.inner.settings.replica_wait;
        // A cluster has a primary per slot range; WAIT is not sent there
        // (see the README's production checklist).
        if wait.is_off() || self.inner.cluster {
            return self.run_script(invocation).await;
        }
        let required = match self.inner.replicas.fresh() {
            Some(n) => wait.required(n),
            None => {
                let info: String = self
                    .with_conn(|mut c| async move {
                        redis::cmd("INFO")
                            .arg("replication")
                            .query_async(&mut c)
                            .await
                    })
                    .await?;
                let n = connected_replicas(&info).unwrap_or(0);
                self.inner.replicas.set(n);
                wait.required(n)
            }
        };
        if required == 0 {
            return self.run_script(invocation).await;
        }
        let (mut conn, conn_no) = self.inner.conn.get_numbered().await?;
        let value: T = match invocation.invoke_async(&mut conn).await {
            Ok(v) => v,
            Err(e) => return Err(self.dropped(e).await),
        };
        // The write's reply is in: a WAIT sent on this connection from now
        // on covers it.
        let ticket = self.inner.group.issued.fetch_add(1, Ordering::AcqRel) + 1;
        self.group_wait(ticket, conn_no, required, write).await?;
        Ok(value)
    }

    /// Waits until a `WAIT` sent after write `ticket` (on connection
    /// `conn_no`) has been answered, sending one if none is on its way:
    /// concurrent writes share one (a group commit), since `WAIT` covers
    /// every earlier write of its connection. `WAIT` blocks its connection
    /// while it waits, so one per write would serialize the shared
    /// connection.
    async fn group_wait(
        &self,
        ticket: u64,
        conn_no: u64,
        required: u32,
        write: &'static str,
    ) -> Result<(), QueueError> {
        let group = &self.inner.group;
        let wait = self.inner.settings.replica_wait;
        let settled = |s: Settled| -> Option<Result<(), QueueError>> {
            if s.upto < ticket {
                return None;
            }
            Some(if s.conn != conn_no {
                Err(QueueError::Unavailable(anyhow::anyhow!(
                    "the connection to Redis changed before the write was confirmed by a replica"
                )))
            } else {
                check_acks(&wait, required, s.acked).map_err(|e| {
                    self.inner.replicas.forget();
                    metrics::counter!("redis_replica_wait_shortfalls_total", "write" => write)
                        .increment(1);
                    QueueError::Unavailable(e.into())
                })
            })
        };
        loop {
            if let Some(done) = settled(group.last()) {
                return done;
            }
            let _turn = group.turn.lock().await;
            if let Some(done) = settled(group.last()) {
                return done;
            }
            let upto = group.issued.load(Ordering::Acquire);
            let (mut conn, n) = self.inner.conn.get_numbered().await?;
            let started = std::time::Instant::now();
            let acked: u32 = match redis::cmd("WAIT")
                .arg(required)
                .arg(wait.timeout_ms())
                .query_async(&mut conn)
                .await
            {
                Ok(a) => a,
                Err(e) => return Err(self.dropped(e).await),
            };
            metrics::histogram!("redis_replica_wait_seconds", "write" => write)
                .record(started.elapsed().as_secs_f64());
            group.settle(Settled {
                upto,
                conn: n,
                acked,
            });
        }
    }

    /// A failed command's error; a connection-level failure drops the
    /// shared connection (the next call makes a fresh one, perhaps to a
    /// new primary).
    async fn dropped(&self, e: RedisError) -> QueueError {
        let e = QueueError::from(e);
        if matches!(e, QueueError::Unavailable(_)) {
            self.inner.conn.reset().await;
            self.inner.replicas.forget();
        }
        e
    }

    /// A command that fails on a connection found dead is not repeated
    /// here: redis-rs cannot tell a command that never left from one whose
    /// reply was lost, and the queue's scripts are not safe to run twice
    /// unseen (an enqueue without a unique key would be stored twice; a
    /// completion or failure repeated after it applied would report its
    /// lease lost). The connection is dropped, so the caller's next call
    /// gets a fresh one, and every caller retries: the workers' loops with
    /// backoff, an event handler by redelivery, a request by 503 with
    /// `Retry-After`.
    async fn with_conn<T, F, Fut>(&self, f: F) -> Result<T, QueueError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let conn = self.inner.conn.get().await?;
        match f(conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                let e = QueueError::from(e);
                if matches!(e, QueueError::Unavailable(_)) {
                    self.inner.conn.reset().await;
                    // A new connection may reach a new primary.
                    self.inner.replicas.forget();
                }
                Err(e)
            }
        }
    }
}

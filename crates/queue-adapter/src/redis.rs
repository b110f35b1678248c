//! The deadpool-redis pool, a shared multiplexed connection taken from it,
//! and the readiness probe.

use anyhow::Context as _;
use async_trait::async_trait;
use deadpool_redis::redis::AsyncConnectionConfig;
use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::{Manager, Pool, Runtime};
use ports::{HealthProbe, ProbeError};
use std::time::Duration;

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    pub max_connections: usize,
    /// Waiting for a pooled connection, or for a new one to connect.
    pub acquire_timeout: Duration,
    /// Longest wait for any reply (blocking waits stay below it).
    pub response_timeout: Duration,
}

impl RedisSettings {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 32,
            acquire_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(5),
        }
    }
}

/// Builds the pool. Connections open lazily: this succeeds with Redis down.
pub fn build_pool(settings: &RedisSettings) -> anyhow::Result<Pool> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(settings.acquire_timeout))
        .set_response_timeout(Some(settings.response_timeout));
    let manager = Manager::new_with_config(settings.url.as_str(), config)
        .context("REDIS_URL is not a valid Redis URL")?;
    Pool::builder(manager)
        .max_size(settings.max_connections)
        .wait_timeout(Some(settings.acquire_timeout))
        .create_timeout(Some(settings.acquire_timeout))
        .recycle_timeout(Some(settings.acquire_timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .context("building the Redis pool")
}

/// One multiplexed connection taken out of the pool and shared by clones:
/// every operation pipelines over it without a pool checkout (and its
/// recycle `PING`). A connection error drops it; the next call takes a fresh one.
pub(crate) struct SharedConnection {
    pool: Pool,
    slot: tokio::sync::RwLock<Option<MultiplexedConnection>>,
}

impl SharedConnection {
    pub(crate) fn new(pool: Pool) -> Self {
        Self {
            pool,
            slot: tokio::sync::RwLock::new(None),
        }
    }

    pub(crate) async fn get(&self) -> Result<MultiplexedConnection, deadpool_redis::PoolError> {
        if let Some(c) = self.slot.read().await.as_ref() {
            return Ok(c.clone());
        }
        let mut slot = self.slot.write().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let conn = deadpool_redis::Connection::take(self.pool.get().await?);
        *slot = Some(conn.clone());
        Ok(conn)
    }

    pub(crate) async fn reset(&self) {
        *self.slot.write().await = None;
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }
}

/// `/readyz` check: a pooled connection answers PING.
#[derive(Clone)]
pub struct RedisHealthProbe {
    pool: Pool,
}

impl std::fmt::Debug for RedisHealthProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHealthProbe").finish_non_exhaustive()
    }
}

impl RedisHealthProbe {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl HealthProbe for RedisHealthProbe {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn check(&self) -> Result<(), ProbeError> {
        let fail = |e: anyhow::Error| ProbeError {
            dependency: "redis",
            source: e,
        };
        let mut conn = self.pool.get().await.map_err(|e| fail(e.into()))?;
        let pong: String = deadpool_redis::redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| fail(e.into()))?;
        if pong != "PONG" {
            return Err(fail(anyhow::anyhow!("unexpected PING reply")));
        }
        Ok(())
    }
}

//! The deadpool-redis pool and its readiness probe.

use anyhow::Context as _;
use async_trait::async_trait;
use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};
use ports::{HealthProbe, ProbeError};
use std::time::Duration;

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    pub max_connections: usize,
    /// Waiting for a pooled connection, or for a new one to connect.
    pub acquire_timeout: Duration,
}

impl RedisSettings {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 32,
            acquire_timeout: Duration::from_secs(1),
        }
    }
}

/// Builds the pool. Connections open lazily: this succeeds with Redis down.
pub fn build_pool(settings: &RedisSettings) -> anyhow::Result<Pool> {
    let mut cfg = Config::from_url(settings.url.clone());
    cfg.pool = Some(PoolConfig {
        max_size: settings.max_connections,
        timeouts: Timeouts {
            wait: Some(settings.acquire_timeout),
            create: Some(settings.acquire_timeout),
            recycle: Some(settings.acquire_timeout),
        },
        ..PoolConfig::default()
    });
    cfg.create_pool(Some(Runtime::Tokio1))
        .context("building the Redis pool")
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

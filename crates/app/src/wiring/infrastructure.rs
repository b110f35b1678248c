//! What every part of the process shares: the pools and clients, and the
//! adapters over them that are built once per process.

use super::adapters::{push_sender, warn_if_redis_evicts};
use super::workers::CONSUMER_GROUPS;
use crate::role::Role;
use crate::settings::{ConnectionBudget, RedisBudget, Settings};
use ports::HealthProbe;
use postgres_adapter::{PgHealthProbe, PgPool};
use queue_adapter::{RedisHealthProbe, RedisJobQueue, RedisPool};
use secrecy::ExposeSecret as _;
use std::sync::Arc;
use std::time::Duration;
use streams_adapter::RedisClient;

/// Connections, and the adapters over them that every part of the process
/// shares. Built once per process.
#[derive(Clone)]
pub struct Infrastructure {
    pub pg: PgPool,
    pub redis: RedisPool,
    pub fred: RedisClient,
    /// FCM, or the log sender without credentials; one per process, so its
    /// access token is shared by the API and the workers.
    pub push: Arc<dyn ports::PushSender>,
    /// The job queue (a handle on `redis`).
    pub queue: RedisJobQueue,
    /// When this process started (ms): with the instance id, what its
    /// heartbeat and its socket counts name it by.
    pub started_at_ms: i64,
    /// How `DATABASE_MAX_CONNECTIONS` is split in this process.
    pub budget: ConnectionBudget,
    /// The HTTP server's worker threads (0 without the serve role).
    pub http_workers: usize,
}

impl std::fmt::Debug for Infrastructure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Infrastructure").finish_non_exhaustive()
    }
}

impl Infrastructure {
    /// Opens the pools and clients `settings` name (Redis may come up later).
    pub async fn connect(settings: &Settings, role: Role) -> anyhow::Result<Self> {
        let http_workers = if role.serves() {
            std::thread::available_parallelism().map_or(2, usize::from)
        } else {
            0
        };
        let budget = ConnectionBudget::split(
            settings.database.max_connections,
            http_workers,
            role.works(),
            settings.database.through_pooler(),
        )
        .map_err(anyhow::Error::msg)?;
        tracing::info!(
            max = settings.database.max_connections,
            shared = budget.shared,
            per_http_worker = budget.per_http_worker + budget.reads_per_http_worker,
            http_workers,
            relay = budget.relay,
            through_pooler = settings.database.through_pooler(),
            "Postgres connections"
        );
        let redis_budget = RedisBudget::split(
            settings.redis.max_connections,
            role.serves(),
            role.works(),
            CONSUMER_GROUPS,
        )
        .map_err(anyhow::Error::msg)?;
        tracing::info!(
            max = settings.redis.max_connections,
            fixed = redis_budget.fixed,
            queue = redis_budget.queue,
            "Redis connections (per node of a cluster)"
        );
        let pg = postgres_adapter::build_pool(&settings.database.pool_settings(budget.shared))?;
        let redis = queue_adapter::build_pool(&settings.redis.pool_settings(redis_budget.queue))?;
        let fred = streams_adapter::connect_with_tls(
            settings.redis.url.expose_secret(),
            &settings.redis.tls,
            Duration::from_secs(2),
        )
        .await?;
        warn_if_redis_evicts(&fred);
        let push = push_sender(settings)?;
        let queue = RedisJobQueue::new(redis.clone(), settings.redis.queue_settings());
        Ok(Self {
            pg,
            redis,
            fred,
            push,
            queue,
            started_at_ms: chrono::Utc::now().timestamp_millis(),
            budget,
            http_workers,
        })
    }

    /// The dependencies `/readyz` checks.
    pub(super) fn probes(&self) -> Vec<Arc<dyn HealthProbe>> {
        vec![
            Arc::new(PgHealthProbe::new(self.pg.clone())),
            Arc::new(RedisHealthProbe::new(self.redis.clone())),
        ]
    }

    /// Closes what `connect` opened.
    pub async fn close(&self) {
        use fred::interfaces::ClientLike as _;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.fred.quit()).await;
        self.redis.close();
        self.pg.close();
    }
}

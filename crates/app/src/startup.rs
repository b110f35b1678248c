//! The composition root: builds every adapter from settings, wires them to
//! the ports, and runs the HTTP server and background work until shutdown.

use crate::settings::{AppEnv, Settings};
use crate::wiring;
use anyhow::Context as _;
use auth_adapter::{AuthSettings, FirebaseTokenVerifier, KeySettings};
use ports::TokenVerifier;
use postgres_adapter::{PgPool, PgSettings};
use queue_adapter::{RedisPool, RedisSettings};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use streams_adapter::RedisClient;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Which parts of the system this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// HTTP and WebSocket.
    Serve,
    /// Queue workers, stream consumers, the outbox relay (and the
    /// operational routes `/healthz`, `/readyz`, `/metrics`).
    Worker,
    /// Both (the local default).
    All,
}

impl Role {
    pub(crate) fn serves(self) -> bool {
        matches!(self, Role::Serve | Role::All)
    }

    pub(crate) fn works(self) -> bool {
        matches!(self, Role::Worker | Role::All)
    }
}

/// Connections shared by every part of the process.
#[derive(Clone)]
pub struct Infrastructure {
    pub pg: PgPool,
    pub redis: RedisPool,
    pub fred: RedisClient,
    /// FCM, or the log sender without credentials; one per process, so its
    /// access token is shared by the API and the workers.
    pub push: Arc<dyn ports::PushSender>,
}

impl std::fmt::Debug for Infrastructure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Infrastructure").finish_non_exhaustive()
    }
}

/// A built application, ready to run.
pub struct Application {
    settings: Settings,
    role: Role,
    infra: Infrastructure,
    server: Option<actix_web::dev::Server>,
    port: Option<u16>,
    /// `/metrics`' own port when `METRICS_ADDR` is set.
    metrics_port: Option<u16>,
    tasks: JoinSet<()>,
    shutdown: CancellationToken,
    /// Set during the drain after a signal: `/readyz` answers 503.
    draining: Arc<AtomicBool>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("role", &self.role)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Makes sure the database exists (local mode) and is migrated (if configured).
pub async fn prepare_database(settings: &Settings) -> anyhow::Result<()> {
    if settings.env == AppEnv::Local
        && postgres_adapter::create_database_if_missing(&settings.database_url)
            .await
            .context(postgres_hint(&settings.database_url))?
    {
        tracing::info!("created the database named in DATABASE_URL");
    }
    if settings.migrate_on_start {
        let applied = postgres_adapter::run_migrations(&settings.database_url)
            .await
            .context(postgres_hint(&settings.database_url))?;
        if !applied.is_empty() {
            tracing::info!(?applied, "applied migrations");
        }
    }
    Ok(())
}

/// Where Postgres was expected and how to start it, without the password.
pub fn postgres_hint(url: &str) -> String {
    let at = url::Url::parse(url)
        .ok()
        .map(|u| {
            format!(
                "{}:{}",
                u.host_str().unwrap_or("?"),
                u.port().unwrap_or(5432)
            )
        })
        .unwrap_or_else(|| "DATABASE_URL".into());
    format!("cannot use Postgres at {at} (is it running? `just services` starts it locally)")
}

pub(crate) fn token_verifier(settings: &Settings) -> anyhow::Result<Arc<dyn TokenVerifier>> {
    let mut auth = AuthSettings::new(settings.firebase_project_id.clone());
    auth.keys = KeySettings::new(settings.firebase_keys_url.clone());
    // Settings refuse both in production already; this holds even for
    // settings built by hand.
    let local = settings.env == AppEnv::Local;
    auth.emulator = local && settings.firebase_auth_emulator_host.is_some();
    auth.dev_secret = settings.dev_token_secret.clone().filter(|_| local);
    if auth.emulator {
        tracing::warn!(
            host = settings
                .firebase_auth_emulator_host
                .as_deref()
                .unwrap_or_default(),
            "FIREBASE_AUTH_EMULATOR_HOST is set: UNSIGNED emulator tokens are accepted. Never do this in production."
        );
    }
    if auth.dev_secret.is_some() {
        tracing::warn!(
            "local mode (APP_ENV=local): dev tokens from `app dev-token` are accepted; set APP_ENV=production on any server others can reach"
        );
    }
    Ok(Arc::new(FirebaseTokenVerifier::new(auth)?))
}

impl Application {
    /// Connects everything `role` needs. Fails (with a message naming what
    /// is missing) if Postgres cannot be prepared; Redis may come up later.
    pub async fn build(settings: Settings, role: Role) -> anyhow::Result<Self> {
        prepare_database(&settings).await?;
        let pg = postgres_adapter::build_pool(&PgSettings {
            max_connections: settings.database_max_connections,
            ..PgSettings::new(settings.database_url.clone())
        })?;
        let redis = queue_adapter::build_pool(&RedisSettings::new(settings.redis_url.clone()))?;
        let fred = streams_adapter::connect(&settings.redis_url, Duration::from_secs(2)).await?;
        let push = wiring::push_sender(&settings)?;
        let infra = Infrastructure {
            pg,
            redis,
            fred,
            push,
        };
        let shutdown = CancellationToken::new();

        let draining = Arc::new(AtomicBool::new(false));
        let (server, port) =
            wiring::http_server(&settings, &infra, role, shutdown.clone(), draining.clone())
                .await?;
        let mut tasks = JoinSet::new();
        let metrics_port = match wiring::metrics_server(&settings, shutdown.clone())? {
            Some((metrics, port)) => {
                tasks.spawn(async move {
                    if let Err(e) = metrics.await {
                        tracing::error!(error = %e, "the metrics listener failed");
                    }
                });
                Some(port)
            }
            None => None,
        };
        if role.works() {
            wiring::start_workers(&settings, &infra, &shutdown, &mut tasks)?;
        }
        Ok(Self {
            settings,
            role,
            infra,
            server: Some(server),
            port: Some(port),
            metrics_port,
            tasks,
            shutdown,
            draining,
        })
    }

    /// The bound HTTP port (the API, or only the operational routes for `worker`).
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The port `/metrics` is served on when `METRICS_ADDR` gives it a
    /// listener of its own.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    /// Cancel it to stop the application gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops gracefully on SIGINT/SIGTERM, after the drain delay
    /// (`SHUTDOWN_DRAIN_MS`) when this process serves the API.
    pub fn stop_on_signal(&self) {
        let drain = if self.role.serves() {
            self.settings.shutdown_drain
        } else {
            Duration::ZERO
        };
        crate::shutdown::drain_then_cancel_on_signal(
            self.shutdown.clone(),
            self.draining.clone(),
            drain,
        );
    }

    pub fn infrastructure(&self) -> &Infrastructure {
        &self.infra
    }

    /// Runs until the shutdown token is cancelled (SIGINT/SIGTERM in `main`),
    /// then stops accepting, finishes in-flight work up to the shutdown
    /// deadline, and closes the pools.
    pub async fn run_until_stopped(mut self) -> anyhow::Result<()> {
        let deadline = self.settings.shutdown_timeout;
        if let Some(server) = self.server.take() {
            // Resolves after a graceful stop (our token) or a fatal error.
            let result = server.await;
            self.shutdown.cancel();
            result.context("the HTTP server failed")?;
        } else {
            self.shutdown.cancelled().await;
        }
        let drained = tokio::time::timeout(deadline, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                deadline_secs = deadline.as_secs(),
                "background work did not finish before the shutdown deadline"
            );
            self.tasks.abort_all();
        }
        use fred::interfaces::ClientLike as _;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.infra.fred.quit()).await;
        self.infra.redis.close();
        self.infra.pg.close();
        tracing::info!(role = ?self.role, "stopped");
        Ok(())
    }
}

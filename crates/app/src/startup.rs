//! The composition root: builds the process from settings
//! (`Application::build`), runs it until it is stopped
//! (`run_until_stopped`), and prepares the database.

use crate::role::Role;
use crate::settings::{AppEnv, Settings};
use crate::wiring::{self, Infrastructure};
use anyhow::Context as _;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A built application, ready to run.
pub struct Application {
    settings: Settings,
    role: Role,
    infra: Infrastructure,
    server: Option<actix_web::dev::Server>,
    port: Option<u16>,
    /// `/metrics`' own port when `METRICS_ADDR` is set.
    metrics_port: Option<u16>,
    /// The ops console's own port when `OPS_ADDR` is set.
    ops_port: Option<u16>,
    tasks: JoinSet<()>,
    /// Cancelled to stop: every long-running part of the process listens.
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
    // Database creation and migrations need a session: the direct
    // endpoint when DATABASE_URL is a transaction pooler.
    let url = settings.database.session_url();
    if settings.env == AppEnv::Local
        && postgres_adapter::create_database_if_missing(url)
            .await
            .context(postgres_hint(url))?
    {
        tracing::info!("created the database named in DATABASE_URL");
    }
    if settings.migrate_on_start {
        let applied = postgres_adapter::run_migrations(url)
            .await
            .context(postgres_hint(url))?;
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

impl Application {
    /// Connects everything `role` needs. Fails (with a message naming what
    /// is missing) if Postgres cannot be prepared; Redis may come up later.
    pub async fn build(settings: Settings, role: Role) -> anyhow::Result<Self> {
        prepare_database(&settings).await?;
        let infra = Infrastructure::connect(&settings, role).await?;
        let shutdown = CancellationToken::new();
        let draining = Arc::new(AtomicBool::new(false));
        // The WebSocket hub, built once, for a process that serves sockets.
        let hub = if role.serves() {
            Some(wiring::hub(&settings, &infra, &shutdown).await?)
        } else {
            None
        };
        let (server, port) = wiring::http_server(
            &settings,
            &infra,
            hub.clone(),
            shutdown.clone(),
            draining.clone(),
        )?;
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
        let ops_port = match wiring::ops_server(&settings, &infra, role, shutdown.clone())? {
            Some((ops, port)) => {
                tasks.spawn(async move {
                    if let Err(e) = ops.await {
                        tracing::error!(error = %e, "the ops console listener failed");
                    }
                });
                Some(port)
            }
            None => None,
        };
        tasks.spawn(wiring::heartbeat(
            &settings,
            &infra,
            role,
            hub,
            shutdown.clone(),
        ));
        if role.works() {
            wiring::start_workers(&settings, &infra, &shutdown, &mut tasks).await?;
        }
        Ok(Self {
            settings,
            role,
            infra,
            server: Some(server),
            port: Some(port),
            metrics_port,
            ops_port,
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

    /// The port the ops console is served on when `OPS_ADDR` gives it a
    /// listener of its own.
    pub fn ops_port(&self) -> Option<u16> {
        self.ops_port
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
        self.infra.close().await;
        tracing::info!(role = ?self.role, "stopped");
        Ok(())
    }
}

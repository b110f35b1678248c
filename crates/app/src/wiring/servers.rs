//! The listeners: the API (with `/ws` and, unless it has its own, the ops
//! console), the operational routes of a worker, `/metrics` and the ops
//! console on listeners of their own.

use super::Infrastructure;
use super::adapters::{object_store, token_verifier};
use crate::role::Role;
use crate::settings::{AppEnv, Settings};
use crate::telemetry;
use anyhow::Context as _;
use domain::events::USERS_TOPIC;
use http_api::{ApiState, OpsState, RateLimiter, Readiness};
use ports::TokenVerifier;
use postgres_adapter::{PgPushTokenRepository, PgUserRepository, PgWelcomeLedger};
use secrecy::ExposeSecret as _;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use streams_adapter::RedisCache;
use tokio_util::sync::CancellationToken;
use usecases::{ProfileService, PushNotifications, PushTokenService, UserData};
use ws_hub::{Hub, HubNotifier};

fn metrics_renderer() -> Option<http_api::MetricsRenderer> {
    telemetry::metrics_handle()
        .map(|h| -> http_api::MetricsRenderer { Arc::new(move || h.render()) })
}

/// `/metrics` on `METRICS_ADDR`, a listener production keeps off the
/// public Service; `None` when it is not set.
pub(crate) fn metrics_server(
    settings: &Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<(actix_web::dev::Server, u16)>> {
    let Some(addr) = settings.http.metrics_addr else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on {addr} (METRICS_ADDR)"))?;
    let port = listener.local_addr()?.port();
    let renderer = metrics_renderer();
    let server = actix_web::HttpServer::new(move || http_api::build_metrics_app(renderer.clone()))
        .workers(1)
        .listen(listener)?
        .shutdown_signal(shutdown.cancelled_owned())
        .shutdown_timeout(1)
        .run();
    tracing::info!(port, "metrics listening");
    Ok(Some((server, port)))
}

/// The ops console on `OPS_ADDR`, a listener of its own (so production can
/// keep it off the public ingress); `None` when it is not set, the console
/// is not served, or this process does not serve the API.
pub(crate) fn ops_server(
    settings: &Settings,
    infra: &Infrastructure,
    role: Role,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<(actix_web::dev::Server, u16)>> {
    let (Some(addr), true) = (settings.ops.addr, role.serves()) else {
        return Ok(None);
    };
    let Some(console) = ops_console(settings, infra, token_verifier(settings)?) else {
        return Ok(None);
    };
    let listener =
        TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr} (OPS_ADDR)"))?;
    let port = listener.local_addr()?.port();
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new().configure(ops_console::configure(console.clone()))
    })
    .workers(1)
    .listen(listener)?
    .shutdown_signal(shutdown.cancelled_owned())
    .shutdown_timeout(1)
    .run();
    tracing::info!(port, "ops console listening");
    Ok(Some((server, port)))
}

/// The HTTP server: the whole API and `/ws` over `hub` for `serve`/`all`
/// (which have one), only the operational routes (`/healthz`, `/readyz`,
/// `/metrics`) for `worker`.
pub(crate) fn http_server(
    settings: &Settings,
    infra: &Infrastructure,
    hub: Option<Hub>,
    shutdown: CancellationToken,
    draining: Arc<AtomicBool>,
) -> anyhow::Result<(actix_web::dev::Server, u16)> {
    // With METRICS_ADDR, /metrics has a listener of its own (see
    // `metrics_server`) and the public one answers 404 there.
    let ops = OpsState {
        readiness: Readiness::new(
            infra.probes(),
            Duration::from_millis(1500),
            Duration::from_secs(1),
        ),
        metrics: metrics_renderer().filter(|_| settings.http.metrics_addr.is_none()),
        draining,
    };
    let (host, port) = (settings.http.host.as_str(), settings.http.port);
    let listener = TcpListener::bind((host, port))
        .with_context(|| format!("cannot listen on {host}:{port} (HTTP_HOST/HTTP_PORT)"))?;
    let port = listener.local_addr()?.port();
    let api = hub.is_some();
    let server = if let Some(hub) = hub {
        api_server(settings, infra, hub, ops, listener, shutdown)?
    } else {
        actix_web::HttpServer::new(move || http_api::build_ops_app(ops.clone()))
            .workers(1)
            .listen(listener)?
            .shutdown_signal(shutdown.cancelled_owned())
            .shutdown_timeout(2)
            .run()
    };
    tracing::info!(port, api, "HTTP server listening");
    Ok((server, port))
}

/// The ops console, when it is served (see `OpsSection`); token sign-in
/// checks tokens with `verifier` (the API's own, so they share its key cache).
pub(crate) fn ops_console(
    settings: &Settings,
    infra: &Infrastructure,
    verifier: Arc<dyn TokenVerifier>,
) -> Option<ops_console::OpsConsole> {
    let mut access = settings.ops.access.clone()?;
    if let (ops_console::Access::SignIn(sign_in), Some(claim)) =
        (&mut access, settings.ops.token_claim.clone())
    {
        sign_in.token = Some(ops_console::TokenSignIn { verifier, claim });
    }
    Some(
        ops_console::OpsConsole::new(Arc::new(infra.queue.clone()))
            .with_events(
                Arc::new(streams_adapter::StreamAdmin::new(
                    infra.fred.clone(),
                    settings.redis.key_prefix.clone(),
                )),
                vec![USERS_TOPIC.to_owned()],
            )
            .with_access(access)
            .with_instances(Arc::new(streams_adapter::RedisInstances::new(
                infra.fred.clone(),
                &settings.redis.key_prefix,
            )))
            .with_support(Arc::new(postgres_adapter::PgSupport::new(infra.pg.clone())))
            .with_trusted_proxies(settings.rate_limit.trusted_proxies.clone())
            .with_session_store(Arc::new(RedisCache::new(
                infra.fred.clone(),
                &settings.redis.key_prefix,
            )))
            .with_sockets(Arc::new(streams_adapter::RedisSocketRegistry::new(
                infra.fred.clone(),
                &settings.redis.key_prefix,
                &settings.instance_id,
                infra.started_at_ms,
            ))),
    )
}

/// The API and `/ws` on `listener`.
fn api_server(
    settings: &Settings,
    infra: &Infrastructure,
    hub: Hub,
    ops: OpsState,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<actix_web::dev::Server> {
    let verifier = token_verifier(settings)?;
    let notifier: Arc<dyn ports::Notifier> = Arc::new(HubNotifier::new(hub.clone()));
    let cursors = settings.http.cursor_codec();
    let push = PushNotifications::new(
        Arc::new(PgPushTokenRepository::new(infra.pg.clone())),
        infra.push.clone(),
        Arc::new(infra.queue.clone()),
    );
    let rate_limiter = RateLimiter::new(
        Arc::new(RedisCache::new(
            infra.fred.clone(),
            &settings.redis.key_prefix,
        )),
        settings.rate_limit.limiter_settings(),
    );
    let http = settings.http.http_settings();
    let spec = http_api::openapi_bytes();
    // Each HTTP worker thread gets its own Postgres pool: a connection's
    // driver task runs on the runtime that opened it, so sharing one pool
    // across workers would wake another thread on every query.
    let workers = infra.http_workers.max(1);
    let per_worker = settings
        .database
        .pool_settings(infra.budget.per_http_worker);
    let reads = infra.budget.reads_per_http_worker;
    let shared_pool = infra.pg.clone();
    let (objects, local_store) = object_store(settings, listener.local_addr()?.port())?;
    match &local_store {
        Some(fs) => {
            if settings.env == AppEnv::Production {
                tracing::warn!(
                    "uploads are kept on this pod's disk: set STORAGE_BUCKET (and AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) to use object storage in production"
                );
            }
            tracing::info!(dir = %fs.root().display(), "uploads stored locally, served under /storage");
        }
        None => tracing::info!(
            "uploads stored in bucket {}",
            settings.storage.bucket.as_deref().unwrap_or_default()
        ),
    }
    let upload_settings = settings.storage.upload_settings();
    let jobs: Arc<dyn ports::JobQueue> = Arc::new(infra.queue.clone());
    let ledger: Arc<dyn ports::WelcomeLedger> = Arc::new(PgWelcomeLedger::new(
        infra.pg.clone(),
        settings.http.cursor_secret.expose_secret().as_bytes(),
    ));
    // The ops console under /ops, unless it has a listener of its own.
    let console = settings
        .ops
        .addr
        .is_none()
        .then(|| ops_console(settings, infra, verifier.clone()))
        .flatten();
    if console.is_some() {
        tracing::info!("ops console at /ops");
    }
    Ok(actix_web::HttpServer::new(move || {
        let pool =
            postgres_adapter::build_pool(&per_worker).unwrap_or_else(|_| shared_pool.clone());
        let users = if reads > 0 {
            PgUserRepository::new(pool.clone()).with_pipelined_reads(&per_worker, reads)
        } else {
            PgUserRepository::new(pool.clone())
        };
        let profiles = ProfileService::new(Arc::new(users.clone())).with_notifier(notifier.clone());
        let uploads = usecases::UploadService::new(
            Arc::new(postgres_adapter::PgUploadRepository::new(pool.clone())),
            objects.clone(),
            profiles.clone(),
            upload_settings.clone(),
        );
        let state = ApiState {
            data: UserData::new(
                Arc::new(users.clone()),
                Arc::new(PgPushTokenRepository::new(pool.clone())),
                ledger.clone(),
                uploads.clone(),
                jobs.clone(),
            ),
            uploads,
            profiles,
            push_tokens: PushTokenService::new(
                Arc::new(PgPushTokenRepository::new(pool)),
                cursors.clone(),
            ),
            push: push.clone(),
            verifier: verifier.clone(),
            ops: ops.clone(),
            settings: http.clone(),
            rate_limiter: Some(rate_limiter.clone()),
        };
        let ws = ws_hub::configure(hub.clone(), verifier.clone());
        let console = console.clone().map(ops_console::configure);
        let local_files = local_store
            .clone()
            .map(storage_adapter::configure_fs_routes);
        http_api::build_app(state, spec.clone(), move |cfg| {
            ws(cfg);
            if let Some(mount) = local_files {
                mount(cfg);
            }
            if let Some(mount) = console {
                mount(cfg);
            }
        })
    })
    .workers(workers)
    // A handle on each socket, so the hub can end a closed WebSocket's
    // connection that actix would otherwise keep for a client that never
    // reads.
    .on_connect(ws_hub::on_connect)
    .listen(listener)?
    .tcp_nodelay(true)
    .shutdown_signal(shutdown.cancelled_owned())
    .shutdown_timeout(settings.shutdown_timeout.as_secs())
    .run())
}

//! Which adapter goes behind which port, per role.

use crate::settings::{AppEnv, Settings};
use crate::startup::{Infrastructure, Role, token_verifier};
use crate::telemetry;
use anyhow::Context as _;
use domain::CursorCodec;
use http_api::{ApiState, HttpSettings, OpsState, RateLimitSettings, RateLimiter, Readiness};
use mail_adapter::{LettreMailer, MailSettings};
use ports::NewJob;
use ports::{EventConsumer as _, Fanout as _, HealthProbe};
use postgres_adapter::{
    PgHealthProbe, PgOutbox, PgPushTokenRepository, PgSettings, PgUserRepository, PgWelcomeLedger,
};
use queue_adapter::{JobWorker, QueueSettings, RedisHealthProbe, RedisJobQueue, WorkerSettings};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use streams_adapter::{
    ConsumerSettings, RedisCache, RedisFanout, RedisStreamConsumer, RedisStreamPublisher,
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use usecases::{
    FORGET_RECIPIENTS_JOB, FanOutPush, ForgetWelcomeRecipients, MAIL_QUEUE, OutboxRelay,
    PUSH_DEVICE_JOB, PUSH_SEND_JOB, ProfileService, PushNotifications, PushTokenService,
    RelaySettings, SendPushToDevice, SendWelcomeMail, WELCOME_GROUP, WELCOME_JOB,
    WelcomeMailTrigger,
};
use ws_hub::{Hub, HubNotifier, HubSettings};

/// The WebSocket hub, joined to the other instances through Redis pub/sub,
/// closing its sockets with 1001 when the process stops.
async fn hub(
    settings: &Settings,
    infra: &Infrastructure,
    shutdown: &CancellationToken,
) -> anyhow::Result<Hub> {
    let hub = Hub::new(HubSettings {
        max_message_bytes: settings.ws_max_message_bytes,
        outbound_queue: settings.ws_outbound_queue,
        ping_interval: settings.ws_ping_interval,
        idle_timeout: settings.ws_idle_timeout,
        handler_concurrency: settings.ws_handler_concurrency,
        max_connections_per_user: settings.ws_max_connections_per_user,
        ..HubSettings::new(settings.instance_id.clone())
    });
    let fanout = Arc::new(RedisFanout::new(&infra.fred, &settings.redis_key_prefix)?);
    hub.set_fanout(fanout.clone());
    fanout.subscribe(Arc::new(hub.clone())).await?;
    let (h, stop) = (hub.clone(), shutdown.clone());
    tokio::spawn(async move {
        stop.cancelled().await;
        h.shutdown();
    });
    Ok(hub)
}

/// FCM when `GOOGLE_APPLICATION_CREDENTIALS` names a service-account key;
/// otherwise a sender that only logs (and says so).
pub(crate) fn push_sender(settings: &Settings) -> anyhow::Result<Arc<dyn ports::PushSender>> {
    let Some(path) = &settings.google_application_credentials else {
        tracing::warn!(
            "push notifications are LOGGED, NOT SENT: set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file to send through FCM"
        );
        return Ok(Arc::new(push_adapter::LogPushSender::new()));
    };
    let key = push_adapter::ServiceAccountKey::from_file(path)
        .context("GOOGLE_APPLICATION_CREDENTIALS")?;
    let project = settings
        .fcm_project_id
        .clone()
        .or_else(|| key.project_id.clone())
        .unwrap_or_else(|| settings.firebase_project_id.clone());
    let sender = push_adapter::FcmSender::new(
        &key,
        push_adapter::FcmSettings {
            base_url: settings.fcm_base_url.clone(),
            token_url: settings.fcm_token_url.clone(),
            ..push_adapter::FcmSettings::new(project)
        },
    )?;
    tracing::info!(to = %sender.describe(), "push notifications ready");
    Ok(Arc::new(sender))
}

/// The HTTP server: the whole API and `/ws` for `serve`/`all`, only the
/// operational routes (`/healthz`, `/readyz`, `/metrics`) for `worker`.
pub(crate) async fn http_server(
    settings: &Settings,
    infra: &Infrastructure,
    role: Role,
    shutdown: CancellationToken,
    draining: Arc<AtomicBool>,
) -> anyhow::Result<(actix_web::dev::Server, u16)> {
    let probes: Vec<Arc<dyn HealthProbe>> = vec![
        Arc::new(PgHealthProbe::new(infra.pg.clone())),
        Arc::new(RedisHealthProbe::new(infra.redis.clone())),
    ];
    // With METRICS_ADDR, /metrics has a listener of its own (see
    // `metrics_server`) and the public one answers 404 there.
    let metrics = metrics_renderer().filter(|_| settings.metrics_addr.is_none());
    let ops = OpsState {
        readiness: Readiness::new(probes, Duration::from_millis(1500), Duration::from_secs(1)),
        metrics,
        draining,
    };
    let listener = TcpListener::bind((settings.http_host.as_str(), settings.http_port))
        .with_context(|| {
            format!(
                "cannot listen on {}:{} (HTTP_HOST/HTTP_PORT)",
                settings.http_host, settings.http_port
            )
        })?;
    let port = listener.local_addr()?.port();
    let server = if role.serves() {
        let hub = hub(settings, infra, &shutdown).await?;
        let verifier = token_verifier(settings)?;
        let users = Arc::new(PgUserRepository::new(infra.pg.clone()));
        let tokens = Arc::new(PgPushTokenRepository::new(infra.pg.clone()));
        let queue = RedisJobQueue::new(
            infra.redis.clone(),
            QueueSettings::new(&settings.redis_key_prefix),
        );
        let push = PushNotifications::new(tokens.clone(), infra.push.clone(), Arc::new(queue));
        let state = ApiState {
            profiles: ProfileService::new(users)
                .with_notifier(Arc::new(HubNotifier::new(hub.clone()))),
            push_tokens: PushTokenService::new(
                tokens,
                CursorCodec::new(settings.cursor_secret.as_bytes().to_vec()),
            ),
            push,
            verifier: verifier.clone(),
            ops,
            settings: HttpSettings {
                json_limit: settings.http_json_limit_bytes,
                cors_origins: settings.cors_allowed_origins.clone(),
            },
            rate_limiter: Some(RateLimiter::new(
                Arc::new(RedisCache::new(
                    infra.fred.clone(),
                    &settings.redis_key_prefix,
                )),
                RateLimitSettings {
                    per_user: settings.rate_limit_per_user,
                    per_ip: settings.rate_limit_per_ip,
                    window: settings.rate_limit_window,
                    trusted_proxies: settings.trusted_proxies.clone(),
                },
            )),
        };
        let spec = http_api::openapi_bytes();
        // Each HTTP worker thread gets its own Postgres pool: a connection's
        // driver task runs on the runtime that opened it, so sharing one pool
        // across workers would wake another thread on every query.
        let workers = std::thread::available_parallelism().map_or(2, usize::from);
        let per_worker = PgSettings {
            max_connections: (settings.database_max_connections / workers).max(2),
            ..PgSettings::new(settings.database_url.clone())
        };
        let notifier: Arc<dyn ports::Notifier> = Arc::new(HubNotifier::new(hub.clone()));
        let cursors = CursorCodec::new(settings.cursor_secret.as_bytes().to_vec());
        let shared_pool = infra.pg.clone();
        actix_web::HttpServer::new(move || {
            let pool =
                postgres_adapter::build_pool(&per_worker).unwrap_or_else(|_| shared_pool.clone());
            let mut state = state.clone();
            let users = PgUserRepository::new(pool.clone()).with_pipelined_reads(&per_worker, 2);
            state.profiles = ProfileService::new(Arc::new(users)).with_notifier(notifier.clone());
            state.push_tokens =
                PushTokenService::new(Arc::new(PgPushTokenRepository::new(pool)), cursors.clone());
            http_api::build_app(
                state,
                spec.clone(),
                ws_hub::configure(hub.clone(), verifier.clone()),
            )
        })
        .workers(workers)
        .listen(listener)?
        .tcp_nodelay(true)
        .shutdown_signal(shutdown.cancelled_owned())
        .shutdown_timeout(settings.shutdown_timeout.as_secs())
        .run()
    } else {
        actix_web::HttpServer::new(move || http_api::build_ops_app(ops.clone()))
            .workers(1)
            .listen(listener)?
            .shutdown_signal(shutdown.cancelled_owned())
            .shutdown_timeout(2)
            .run()
    };
    tracing::info!(port, api = role.serves(), "HTTP server listening");
    Ok((server, port))
}

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
    let Some(addr) = settings.metrics_addr else {
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

/// The background work of the `worker` role: the outbox relay, the
/// welcome-mail consumer group and the job worker.
pub(crate) fn start_workers(
    settings: &Settings,
    infra: &Infrastructure,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    let prefix = settings.redis_key_prefix.as_str();
    let queue = RedisJobQueue::new(infra.redis.clone(), QueueSettings::new(prefix));

    let relay = OutboxRelay::new(
        Arc::new(PgOutbox::new(
            infra.pg.clone(),
            settings.database_url.clone(),
        )),
        Arc::new(RedisStreamPublisher::new(infra.fred.clone(), prefix)),
        RelaySettings::default(),
    );
    let stop = shutdown.clone();
    tasks.spawn(async move { relay.run(stop.cancelled_owned()).await });

    let consumer = RedisStreamConsumer::new(
        &infra.fred,
        ConsumerSettings {
            claim_idle: settings.stream_claim_idle,
            max_len: settings.stream_max_len,
            ..ConsumerSettings::new(
                prefix,
                domain::events::USERS_TOPIC,
                WELCOME_GROUP,
                &format!("{}-welcome", settings.instance_id),
            )
        },
    );
    let trigger = Arc::new(WelcomeMailTrigger::new(Arc::new(queue.clone())));
    let stop = shutdown.clone();
    tasks.spawn(async move {
        if let Err(e) = consumer
            .run(trigger, Box::pin(stop.cancelled_owned()))
            .await
        {
            tracing::error!(error = %e, "the welcome-mail consumer stopped");
        }
    });

    let mailer = LettreMailer::new(&MailSettings {
        smtp_url: settings.smtp_url.clone(),
        outbox_dir: settings.mail_outbox_dir.clone(),
        ..MailSettings::new(settings.mail_from.clone())
    })?;
    if settings.env == AppEnv::Production && mailer.is_insecure_or_local() {
        tracing::warn!(to = %mailer.describe(), "mail is not sent over TLS (or only written to files) in production: set SMTP_URL to smtps://... or smtp://...?tls=required");
    } else {
        tracing::info!(to = %mailer.describe(), "mail transport ready");
    }
    let ledger: Arc<dyn ports::WelcomeLedger> = Arc::new(PgWelcomeLedger::new(
        infra.pg.clone(),
        settings.cursor_secret.as_bytes(),
    ));
    let queue_for_jobs = queue.clone();
    let mut worker = JobWorker::new(
        queue,
        WorkerSettings {
            concurrency: settings.worker_concurrency,
            lease: settings.job_lease,
            // A dead worker's jobs run again soon after their leases end.
            recover_every: (settings.job_lease / 4)
                .clamp(Duration::from_millis(100), Duration::from_secs(5)),
            retry_base: settings.job_retry_base,
            // Leave the process a moment after the worker's own deadline.
            shutdown_timeout: settings
                .shutdown_timeout
                .saturating_sub(Duration::from_secs(2))
                .max(Duration::from_secs(1)),
            ..WorkerSettings::new(settings.instance_id.clone(), settings.worker_queues.clone())
        },
    );
    worker.handle(
        WELCOME_JOB,
        Arc::new(SendWelcomeMail::new(Arc::new(mailer), ledger.clone())),
    );
    worker.handle(
        FORGET_RECIPIENTS_JOB,
        Arc::new(ForgetWelcomeRecipients::new(ledger)),
    );
    worker.periodic(
        FORGET_RECIPIENTS_JOB,
        // Daily at 04:17 UTC.
        "0 17 4 * * *",
        NewJob::new(FORGET_RECIPIENTS_JOB, 1, &serde_json::json!({}))?.on_queue(MAIL_QUEUE),
    )?;
    let tokens = Arc::new(PgPushTokenRepository::new(infra.pg.clone()));
    worker.handle(
        PUSH_SEND_JOB,
        Arc::new(FanOutPush::new(tokens.clone(), Arc::new(queue_for_jobs))),
    );
    worker.handle(
        PUSH_DEVICE_JOB,
        Arc::new(SendPushToDevice::new(infra.push.clone(), tokens)),
    );
    tasks.spawn(worker.run(shutdown.clone()));
    tracing::info!(instance = %settings.instance_id, "worker role started");
    Ok(())
}

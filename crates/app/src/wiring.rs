//! Which adapter goes behind which port, per role.
//!
//! [`Infrastructure::connect`] builds everything the process shares, once:
//! connections and the adapters over them. `http_server` and
//! `start_workers` compose the roles from it; the HTTP server's per-worker
//! closure builds only what is bound to a worker thread's own Postgres pool.

use crate::role::Role;
use crate::settings::{AppEnv, Settings};
use crate::telemetry;
use anyhow::Context as _;
use auth_adapter::FirebaseTokenVerifier;
use domain::events::USERS_TOPIC;
use http_api::{ApiState, OpsState, RateLimiter, Readiness};
use mail_adapter::LettreMailer;
use ports::{EventConsumer as _, Fanout as _, HealthProbe, TokenVerifier};
use postgres_adapter::{
    PgHealthProbe, PgOutbox, PgPool, PgPushTokenRepository, PgUserRepository, PgWelcomeLedger,
};
use queue_adapter::{JobWorker, RedisHealthProbe, RedisJobQueue, RedisPool};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use streams_adapter::{
    RedisCache, RedisClient, RedisFanout, RedisStreamConsumer, RedisStreamPublisher,
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use usecases::{
    FanOutPush, ForgetRecipientsJob, ForgetWelcomeRecipients, OutboxRelay, ProfileService,
    PushNotifications, PushTokenService, RelaySettings, SendPushToDevice, SendWelcomeMail,
    SocketFirst, UserData, WELCOME_GROUP, WelcomeMailTrigger,
};
use ws_hub::{Hub, HubNotifier};

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
    /// The WebSocket hub, once the API server made it (its connections are
    /// in this process's heartbeat).
    pub hub: Arc<std::sync::OnceLock<Hub>>,
    /// When this process started (ms): with the instance id, what its
    /// heartbeat and its socket counts name it by.
    pub started_at_ms: i64,
    /// How `DATABASE_MAX_CONNECTIONS` is split in this process.
    pub budget: crate::settings::ConnectionBudget,
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
    pub async fn connect(settings: &Settings, role: crate::Role) -> anyhow::Result<Self> {
        let http_workers = if role.serves() {
            std::thread::available_parallelism().map_or(2, usize::from)
        } else {
            0
        };
        let budget = crate::settings::ConnectionBudget::split(
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
        let redis_budget = crate::settings::RedisBudget::split(
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
            &settings.redis.url,
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
            hub: Arc::default(),
            started_at_ms: chrono::Utc::now().timestamp_millis(),
            budget,
            http_workers,
        })
    }

    /// The dependencies `/readyz` checks.
    fn probes(&self) -> Vec<Arc<dyn HealthProbe>> {
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

/// The Firebase ID token verifier (with the local-only ways in when local).
pub(crate) fn token_verifier(settings: &Settings) -> anyhow::Result<Arc<dyn TokenVerifier>> {
    let auth = settings.auth.auth_settings(settings.env);
    if auth.emulator {
        tracing::warn!(
            host = settings
                .auth
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

/// FCM when `GOOGLE_APPLICATION_CREDENTIALS` names a service-account key;
/// otherwise a sender that only logs (and says so).
fn push_sender(settings: &Settings) -> anyhow::Result<Arc<dyn ports::PushSender>> {
    let Some(sender) = fcm_sender(settings)? else {
        tracing::warn!(
            "push notifications are LOGGED, NOT SENT: set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file to send through FCM"
        );
        return Ok(Arc::new(push_adapter::LogPushSender::new()));
    };
    tracing::info!(to = %sender.describe(), "push notifications ready");
    Ok(Arc::new(sender))
}

/// Redis with a `maxmemory-policy` other than `noeviction` drops keys when
/// memory runs out, queued jobs and stream entries among them, without an
/// error: said loudly at startup (in the background: Redis may not be up
/// yet), and a failure of `app doctor`.
fn warn_if_redis_evicts(fred: &RedisClient) {
    let fred = fred.clone();
    tokio::spawn(async move {
        let asked = tokio::time::timeout(
            Duration::from_secs(30),
            streams_adapter::inspect::server(&fred),
        )
        .await;
        if let Ok(Ok(server)) = asked
            && server.evicts()
        {
            tracing::warn!(
                maxmemory_policy = %server.maxmemory_policy,
                "REDIS MAY EVICT QUEUED JOBS AND STREAM ENTRIES: its maxmemory-policy is {}; set it to noeviction (several managed Redis offerings default to an LRU policy; `app doctor` fails on it)",
                server.maxmemory_policy
            );
        }
    });
}

/// FCM with the service account of `GOOGLE_APPLICATION_CREDENTIALS`;
/// `None` without one.
pub(crate) fn fcm_sender(settings: &Settings) -> anyhow::Result<Option<push_adapter::FcmSender>> {
    let push = &settings.push;
    let Some(path) = &push.google_application_credentials else {
        return Ok(None);
    };
    let key = push_adapter::ServiceAccountKey::from_file(path)
        .context("GOOGLE_APPLICATION_CREDENTIALS")?;
    let project = push
        .fcm_project_id
        .clone()
        .or_else(|| key.project_id.clone())
        .unwrap_or_else(|| settings.auth.firebase_project_id.clone());
    Ok(Some(push_adapter::FcmSender::new(
        &key,
        push.fcm_settings(project),
    )?))
}

/// The WebSocket hub, joined to the other instances through Redis pub/sub
/// (which also keeps topics' histories and presence), closing its sockets
/// with 1001 when the process stops.
async fn hub(
    settings: &Settings,
    infra: &Infrastructure,
    shutdown: &CancellationToken,
) -> anyhow::Result<Hub> {
    let (hub, fanout) = realtime_hub(settings, infra, shutdown)?;
    fanout
        .subscribe(Arc::new(hub.clone()), shutdown.clone())
        .await?;
    Ok(hub)
}

/// A hub wired to Redis (fan-out, history, presence, socket counts), not
/// yet subscribed to the fan-out.
fn realtime_hub(
    settings: &Settings,
    infra: &Infrastructure,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Hub, Arc<RedisFanout>)> {
    let hub = Hub::with_shutdown(settings.ws.hub_settings(&settings.instance_id), shutdown);
    // The namespaces clients may use (`user:<uid>` is built in, recoverable);
    // an application adds its own here, with its policy.
    hub.namespace(
        "public",
        ports::NamespaceOptions {
            presence: true,
            history: settings.ws.public_history(),
            ..ports::NamespaceOptions::default()
        },
        Arc::new(ws_hub::AnyUser),
    );
    hub.set_socket_registry(Arc::new(streams_adapter::RedisSocketRegistry::new(
        infra.fred.clone(),
        &settings.redis.key_prefix,
        &settings.instance_id,
        infra.started_at_ms,
    )));
    let fanout = Arc::new(RedisFanout::new(&infra.fred, &settings.redis.key_prefix)?);
    hub.set_fanout(fanout.clone());
    hub.set_history(fanout.clone());
    hub.set_presence(Arc::new(streams_adapter::RedisPresence::new(
        infra.fred.clone(),
        &settings.redis.key_prefix,
    )));
    hub.set_account_tombstones(Arc::new(PgUserRepository::new(infra.pg.clone())));
    Ok((hub, fanout))
}

/// Realtime for the worker role: a hub without sockets that publishes to
/// the instances holding them and hears their sockets' acks.
async fn worker_realtime(
    settings: &Settings,
    infra: &Infrastructure,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<HubNotifier>> {
    let (hub, fanout) = realtime_hub(settings, infra, shutdown)?;
    fanout
        .subscribe(Arc::new(hub.clone()), shutdown.clone())
        .await?;
    Ok(Arc::new(HubNotifier::new(hub)))
}

/// What deletes Firebase Auth accounts: the emulator when
/// `FIREBASE_AUTH_EMULATOR_HOST` is set, else the Identity Toolkit with the
/// service account of `GOOGLE_APPLICATION_CREDENTIALS`; `None` without
/// either (deleted accounts then keep their Firebase user, and say so).
pub(crate) fn identity_admin(
    settings: &Settings,
) -> anyhow::Result<Option<Arc<dyn ports::IdentityAdmin>>> {
    let project = &settings.auth.firebase_project_id;
    if let Some(host) = &settings.auth.firebase_auth_emulator_host
        && settings.env == AppEnv::Local
    {
        return Ok(Some(Arc::new(push_adapter::FirebaseUserAdmin::emulator(
            host, project,
        )?)));
    }
    let Some(path) = &settings.push.google_application_credentials else {
        tracing::warn!(
            "deleted accounts keep their Firebase Auth user: set GOOGLE_APPLICATION_CREDENTIALS to a service-account key that may delete users"
        );
        return Ok(None);
    };
    let key = push_adapter::ServiceAccountKey::from_file(path)
        .context("GOOGLE_APPLICATION_CREDENTIALS")?;
    Ok(Some(Arc::new(push_adapter::FirebaseUserAdmin::new(
        &key,
        project,
        &settings.auth.identity_toolkit_url,
        settings.push.fcm_token_url.clone(),
    )?)))
}

/// The object store: the bucket when `STORAGE_BUCKET` is set, else the
/// local directory, whose forms and links the API serves under `/storage`
/// (returned too, to be mounted) at `port`.
pub(crate) fn object_store(
    settings: &Settings,
    port: u16,
) -> anyhow::Result<(
    Arc<dyn ports::ObjectStore>,
    Option<storage_adapter::FsStore>,
)> {
    let storage = &settings.storage;
    if let Some(bucket) = &storage.bucket {
        let store = storage_adapter::S3Store::new(&storage.storage_settings(), bucket)?;
        return Ok((Arc::new(store), None));
    }
    let base = storage
        .local_base_url
        .clone()
        .unwrap_or_else(|| format!("http://localhost:{port}"));
    let store = storage_adapter::FsStore::new(
        &storage.local_dir,
        &base,
        settings.http.cursor_secret.as_bytes(),
    )
    .with_public_base(storage.public_base_url.clone());
    Ok((Arc::new(store.clone()), Some(store)))
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

/// The HTTP server: the whole API and `/ws` for `serve`/`all`, only the
/// operational routes (`/healthz`, `/readyz`, `/metrics`) for `worker`.
pub(crate) async fn http_server(
    settings: &Settings,
    infra: &Infrastructure,
    role: Role,
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
    let server = if role.serves() {
        api_server(settings, infra, ops, listener, shutdown).await?
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

/// Says every few seconds that this process is alive (`ports::Instances`:
/// the ops console lists the live ones), until shutdown.
pub(crate) fn heartbeat(
    settings: &Settings,
    infra: &Infrastructure,
    role: Role,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let instances =
        streams_adapter::RedisInstances::new(infra.fred.clone(), &settings.redis.key_prefix);
    let hub = infra.hub.clone();
    let now = || chrono::Utc::now().timestamp_millis();
    let mut info = ports::InstanceInfo {
        id: settings.instance_id.clone(),
        role: format!("{role:?}").to_ascii_lowercase(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at_ms: infra.started_at_ms,
        last_seen_ms: 0,
        ws_connections: None,
    };
    async move {
        use ports::Instances as _;
        loop {
            info.last_seen_ms = now();
            info.ws_connections = hub.get().map(|h| h.connection_count() as u64);
            if let Err(e) = instances.beat(&info).await {
                tracing::debug!(error = %e, "heartbeat not written");
            }
            tokio::select! {
                () = tokio::time::sleep(ports::admin::INSTANCE_BEAT_EVERY) => {}
                () = shutdown.cancelled() => break,
            }
        }
    }
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
async fn api_server(
    settings: &Settings,
    infra: &Infrastructure,
    ops: OpsState,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<actix_web::dev::Server> {
    let hub = hub(settings, infra, &shutdown).await?;
    let _ = infra.hub.set(hub.clone());
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
        settings.http.cursor_secret.as_bytes(),
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

/// How many consumer groups the worker role runs (each reads on a Redis
/// connection of its own: the Redis budget counts them).
const CONSUMER_GROUPS: usize = 2;

/// The consumer groups of one process: adding one is one call.
struct ConsumerGroups<'a> {
    settings: &'a Settings,
    infra: &'a Infrastructure,
    shutdown: &'a CancellationToken,
    tasks: &'a mut JoinSet<()>,
    added: usize,
}

impl ConsumerGroups<'_> {
    /// Runs one consumer of consumer group `group` on `topic`'s stream,
    /// handing its events to `handler`, until shutdown.
    fn add(&mut self, topic: &str, group: &str, handler: Arc<dyn ports::EventHandler>) {
        let settings = self.settings.worker.consumer_settings(
            &self.settings.redis.key_prefix,
            topic,
            group,
            &format!("{}-{group}", self.settings.instance_id),
        );
        self.added += 1;
        let consumer = RedisStreamConsumer::new(&self.infra.fred, settings);
        let (stop, group) = (self.shutdown.clone(), group.to_owned());
        self.tasks.spawn(async move {
            if let Err(e) = consumer.run(handler, stop).await {
                tracing::error!(error = %e, group = %group, "a consumer group stopped");
            }
        });
    }
}

/// The background work of the `worker` role: the outbox relay, the
/// consumer groups and the job worker.
pub(crate) async fn start_workers(
    settings: &Settings,
    infra: &Infrastructure,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    let relay = OutboxRelay::new(
        // Leadership and LISTEN need a session: the direct endpoint when
        // DATABASE_URL is a transaction pooler.
        Arc::new(PgOutbox::new(
            infra.pg.clone(),
            settings.database.session_url().to_owned(),
        )),
        Arc::new(
            RedisStreamPublisher::new(infra.fred.clone(), settings.redis.key_prefix.as_str())
                .with_replica_wait(settings.redis.replica_wait),
        ),
        RelaySettings::default(),
    );
    let stop = shutdown.clone();
    tasks.spawn(async move { relay.run(stop).await });

    let queue: Arc<dyn ports::JobQueue> = Arc::new(infra.queue.clone());
    let mut groups = ConsumerGroups {
        settings,
        infra,
        shutdown,
        tasks,
        added: 0,
    };
    groups.add(
        USERS_TOPIC,
        WELCOME_GROUP,
        Arc::new(WelcomeMailTrigger::new(
            queue.clone(),
            Arc::new(PgUserRepository::new(infra.pg.clone())),
        )),
    );
    groups.add(
        USERS_TOPIC,
        usecases::ACCOUNT_DELETION_GROUP,
        Arc::new(usecases::AccountDeletionTrigger::new(queue.clone())),
    );
    anyhow::ensure!(
        groups.added == CONSUMER_GROUPS,
        "CONSUMER_GROUPS ({CONSUMER_GROUPS}) is not the number of groups started ({}): the Redis budget counts them",
        groups.added
    );

    let mailer = LettreMailer::new(&settings.mail.mail_settings())?;
    if settings.env == AppEnv::Production && mailer.is_insecure_or_local() {
        tracing::warn!(to = %mailer.describe(), "mail is not sent over TLS (or only written to files) in production: set SMTP_URL to smtps://... or smtp://...?tls=required");
    } else {
        tracing::info!(to = %mailer.describe(), "mail transport ready");
    }
    let ledger: Arc<dyn ports::WelcomeLedger> = Arc::new(PgWelcomeLedger::new(
        infra.pg.clone(),
        settings.http.cursor_secret.as_bytes(),
    ));
    let tokens = Arc::new(PgPushTokenRepository::new(infra.pg.clone()));
    let realtime = worker_realtime(settings, infra, shutdown).await?;
    let realtime_notifier: Arc<dyn ports::Notifier> = realtime.clone();
    let queue_for_saga = queue.clone();
    let mut worker = JobWorker::new(
        infra.queue.clone(),
        settings
            .worker
            .worker_settings(&settings.instance_id, settings.shutdown_timeout),
    );
    worker
        .register(Arc::new(
            SendWelcomeMail::new(Arc::new(mailer), ledger.clone())
                .with_users(Arc::new(PgUserRepository::new(infra.pg.clone()))),
        ))
        .register(Arc::new(ForgetWelcomeRecipients::new(ledger)))
        .register(Arc::new(FanOutPush::new(tokens.clone(), queue.clone())))
        .register(Arc::new(SendPushToDevice::new(
            infra.push.clone(),
            tokens.clone(),
        )))
        .register(Arc::new(SocketFirst::new(
            realtime,
            PushNotifications::new(tokens, infra.push.clone(), queue.clone()),
            queue,
            settings.ws.ack_wait,
        )));
    let (objects, _) = object_store(settings, settings.http.port)?;
    worker
        .register(Arc::new(usecases::CleanUpUploads::new(
            Arc::new(postgres_adapter::PgUploadRepository::new(infra.pg.clone())),
            objects.clone(),
            settings.storage.upload_settings(),
        )))
        .register(Arc::new(
            usecases::EraseAccount::new(
                Arc::new(PgUserRepository::new(infra.pg.clone())),
                objects,
                realtime_notifier,
                queue_for_saga,
                identity_admin(settings)?,
            )
            .with_late_sweep(settings.worker.deletion_late_sweep),
        ))
        .register(Arc::new(usecases::ForgetDeletions::new(Arc::new(
            PgUserRepository::new(infra.pg.clone()),
        ))));
    // Daily at 04:17 UTC.
    worker.every("0 17 4 * * *", &ForgetRecipientsJob::default())?;
    // Every ten minutes.
    worker.every("0 */10 * * * *", &usecases::CleanUpUploadsJob::default())?;
    // Hourly, at 23 past.
    worker.every("0 23 * * * *", &usecases::ForgetDeletionsJob::default())?;
    tasks.spawn(worker.run(shutdown.clone()));
    tracing::info!(instance = %settings.instance_id, "worker role started");
    Ok(())
}

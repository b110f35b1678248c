//! Realtime: the WebSocket hub over Redis (fan-out, history, presence,
//! socket counts), and this process's heartbeat.

use super::Infrastructure;
use crate::role::Role;
use crate::settings::Settings;
use ports::Fanout as _;
use postgres_adapter::PgUserRepository;
use std::sync::Arc;
use streams_adapter::RedisFanout;
use tokio_util::sync::CancellationToken;
use ws_hub::{Hub, HubNotifier};

/// The WebSocket hub, joined to the other instances through Redis pub/sub
/// (which also keeps topics' histories and presence), counting its
/// sockets in Redis, closing them with 1001 when the process stops.
pub(crate) async fn hub(
    settings: &Settings,
    infra: &Infrastructure,
    shutdown: &CancellationToken,
) -> anyhow::Result<Hub> {
    let prefix = &settings.redis.key_prefix;
    let fanout = Arc::new(RedisFanout::new(&infra.fred, prefix)?);
    let hub = Hub::builder(settings.ws.hub_settings(&settings.instance_id))
        .shutdown(shutdown)
        // The namespaces clients may use (`user:<uid>` is built in,
        // recoverable); an application adds its own here, with its policy.
        .namespace(
            "public",
            ports::NamespaceOptions {
                presence: true,
                history: settings.ws.public_history(),
                ..ports::NamespaceOptions::default()
            },
            Arc::new(ws_hub::AnyUser),
        )
        .socket_registry(Arc::new(streams_adapter::RedisSocketRegistry::new(
            infra.fred.clone(),
            prefix,
            &settings.instance_id,
            infra.started_at_ms,
        )))
        .fanout(fanout.clone())
        .history(fanout.clone())
        .presence(Arc::new(streams_adapter::RedisPresence::new(
            infra.fred.clone(),
            prefix,
        )))
        .account_tombstones(Arc::new(PgUserRepository::new(infra.pg.clone())))
        .build();
    fanout
        .subscribe(Arc::new(hub.clone()), shutdown.clone())
        .await?;
    Ok(hub)
}

/// Realtime for the worker role: a hub without sockets that publishes to
/// the instances holding them and hears their sockets' acks.
pub(super) async fn worker_realtime(
    settings: &Settings,
    infra: &Infrastructure,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<HubNotifier>> {
    Ok(Arc::new(HubNotifier::new(
        hub(settings, infra, shutdown).await?,
    )))
}

/// Says every few seconds that this process is alive (`ports::Instances`:
/// the ops console lists the live ones), until shutdown.
pub(crate) fn heartbeat(
    settings: &Settings,
    infra: &Infrastructure,
    role: Role,
    hub: Option<Hub>,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let instances =
        streams_adapter::RedisInstances::new(infra.fred.clone(), &settings.redis.key_prefix);
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
            info.ws_connections = hub.as_ref().map(|h| h.connection_count() as u64);
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

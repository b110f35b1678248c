//! Building a hub, once, with everything it depends on: the fan-out to
//! other instances, the topics' history, the presence store, the socket
//! registry, the account tombstones, the namespaces and the handlers.

use crate::handlers;
use crate::hub::{self, Hub, HubSettings, MessageHandler};
use crate::namespaces::{Namespace, Namespaces};
use ports::{
    Fanout, NamespaceOptions, PresenceStore, SocketRegistry, TopicHistory, TopicPolicy,
    UserRepository,
};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a hub is made of, given before it is built. Every dependency is
/// optional: a hub without a fan-out serves one instance, without a
/// history no topic is recoverable, without a presence store no topic
/// keeps presence.
#[must_use = "a builder does nothing until `build`"]
pub struct HubBuilder {
    settings: HubSettings,
    shutdown: CancellationToken,
    handlers: HashMap<String, Arc<dyn MessageHandler>>,
    namespaces: Namespaces,
    fanout: Option<Arc<dyn Fanout>>,
    history: Option<Arc<dyn TopicHistory>>,
    presence: Option<Arc<dyn PresenceStore>>,
    socket_registry: Option<Arc<dyn SocketRegistry>>,
    tombstones: Option<Arc<dyn UserRepository>>,
}

impl std::fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubBuilder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub with the built-in handlers and namespaces and no other
    /// dependency (one instance, nothing recoverable).
    pub fn new(settings: HubSettings) -> Self {
        Self::builder(settings).build()
    }

    /// Starts building a hub with the built-in handlers (`echo`,
    /// `subscribe`, `unsubscribe`, `presence`, `publish`, `ack`) and
    /// namespaces (`public`, `user`).
    pub fn builder(settings: HubSettings) -> HubBuilder {
        let namespaces = Namespaces::builtin(settings.user_history);
        HubBuilder {
            settings,
            shutdown: CancellationToken::new(),
            handlers: handlers::builtins()
                .into_iter()
                .map(|(kind, h)| (kind.to_owned(), h))
                .collect(),
            namespaces,
            fanout: None,
            history: None,
            presence: None,
            socket_registry: None,
            tombstones: None,
        }
    }
}

impl HubBuilder {
    /// Shuts the hub down (closing its sockets with 1001 and refusing new
    /// ones) when `shutdown` is cancelled, as every long-running part of
    /// the process does.
    pub fn shutdown(mut self, shutdown: &CancellationToken) -> Self {
        self.shutdown = shutdown.child_token();
        self
    }

    /// Routes inbound messages of type `kind` to `handler` (replacing any).
    pub fn on(mut self, kind: &str, handler: Arc<dyn MessageHandler>) -> Self {
        self.handlers.insert(kind.to_owned(), handler);
        self
    }

    /// Declares (or replaces) the namespace `name`: topics `name:<id>`
    /// with `options`, joined and published to as `policy` allows.
    pub fn namespace(
        mut self,
        name: &str,
        options: NamespaceOptions,
        policy: Arc<dyn TopicPolicy>,
    ) -> Self {
        self.namespaces.insert(name, Namespace { options, policy });
        self
    }

    /// Carries notifications to and from other instances through `fanout`
    /// (subscribe the built hub to it: `fanout.subscribe(hub)`).
    pub fn fanout(mut self, fanout: Arc<dyn Fanout>) -> Self {
        self.fanout = Some(fanout);
        self
    }

    /// Keeps the histories of recoverable topics in `history` (usually the
    /// same Redis as the fan-out, which publishes recorded messages).
    pub fn history(mut self, history: Arc<dyn TopicHistory>) -> Self {
        self.history = Some(history);
        self
    }

    /// Where presence is kept; the hub refreshes this instance's entries
    /// every third of `presence_ttl` until it shuts down.
    pub fn presence(mut self, store: Arc<dyn PresenceStore>) -> Self {
        self.presence = Some(store);
        self
    }

    /// Counts each user's open sockets in `registry`, in the order they
    /// open and close (one task applies them), off the connection's path: a
    /// failed or dropped count is logged, never felt by a client.
    pub fn socket_registry(mut self, registry: Arc<dyn SocketRegistry>) -> Self {
        self.socket_registry = Some(registry);
        self
    }

    /// Refuses the upgrade to a token issued before its uid's account was
    /// deleted (`users` keeps the tombstones).
    pub fn account_tombstones(mut self, users: Arc<dyn UserRepository>) -> Self {
        self.tombstones = Some(users);
        self
    }

    /// The hub. Its background tasks (socket counts, presence refresh)
    /// start on the current Tokio runtime; without one, the hub neither
    /// counts sockets nor refreshes presence.
    pub fn build(self) -> Hub {
        let runtime = tokio::runtime::Handle::try_current().ok();
        let socket_counts = match (self.socket_registry, &runtime) {
            (Some(registry), Some(runtime)) => {
                let (tx, rx) = mpsc::channel::<(String, bool)>(10_000);
                runtime.spawn(count_sockets(registry.clone(), rx));
                Some((registry, tx))
            }
            _ => None,
        };
        let hub = Hub::from_parts(hub::Parts {
            settings: self.settings,
            shutdown: self.shutdown,
            handlers: self.handlers,
            namespaces: self.namespaces,
            fanout: self.fanout,
            history: self.history,
            presence: self.presence.clone(),
            socket_counts,
            tombstones: self.tombstones,
        });
        if let (Some(store), Some(runtime)) = (self.presence, runtime) {
            runtime.spawn(hub::refresh_presence(hub.clone(), store));
        }
        hub
    }
}

/// Applies socket opens and closes to `registry`, in order.
async fn count_sockets(registry: Arc<dyn SocketRegistry>, mut rx: mpsc::Receiver<(String, bool)>) {
    while let Some((uid, opened)) = rx.recv().await {
        let done = if opened {
            registry.opened(&uid).await
        } else {
            registry.closed(&uid).await
        };
        if let Err(e) = done {
            tracing::debug!(error = %e, "socket count not updated");
        }
    }
}

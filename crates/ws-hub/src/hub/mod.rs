//! The hub: who is connected ([`registry`]), what they subscribed to
//! ([`subscriptions`], [`presence`]), how messages reach them
//! ([`delivery`]), and which handler answers which message type
//! ([`dispatch`]). It is built once, with its dependencies, by
//! [`HubBuilder`](crate::HubBuilder); the built-in handlers, the notifier and
//! the connection depend on it, and it on none of them.

mod delivery;
mod dispatch;
mod presence;
mod registry;
mod subscriptions;

pub(crate) use delivery::{SendOutcome, disconnect_notice};
pub(crate) use dispatch::HubSlot;
pub use dispatch::{HandlerContext, HandlerError, MessageHandler, Reply};
pub(crate) use presence::refresh_presence;
pub(crate) use registry::Kick;
pub use subscriptions::INSUFFICIENT_STATE;

use crate::namespaces::Namespaces;
use ports::{Fanout, HistoryOptions, PresenceStore, SocketRegistry, TopicHistory};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// How the hub behaves. `new` gives production defaults.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// This instance (fan-out messages it published itself are ignored).
    pub instance_id: String,
    /// Largest message accepted (frames and reassembled fragments); bigger
    /// closes the connection with 1009.
    pub max_message_bytes: usize,
    /// Messages queued for one connection; a client too slow to drain it is
    /// disconnected.
    pub outbound_queue: usize,
    /// Bytes queued for one connection (its replies and notifications
    /// waiting to be written). Replies to its own requests wait for room,
    /// so a client that sends and never reads stops being read (the
    /// requests it sends wait in its own socket), and is closed once it
    /// has drained nothing for `idle_timeout`; a notification to a full
    /// queue drops the client at once.
    pub outbound_bytes: usize,
    pub ping_interval: Duration,
    /// A connection silent (no pong, no message) this long is closed.
    pub idle_timeout: Duration,
    /// Handler calls running at once across the hub.
    pub handler_concurrency: usize,
    /// Handler calls running at once for one connection.
    pub per_connection_concurrency: usize,
    /// Topics one connection may join.
    pub max_topics: usize,
    /// Sockets one user may hold open on this instance; more are refused
    /// with 429 before the upgrade. 0: no limit.
    pub max_connections_per_user: usize,
    /// The history of each user's own topic (`user:<uid>`, where
    /// notifications to the user go); `None`: not recoverable.
    pub user_history: Option<HistoryOptions>,
    /// How long a presence entry lives unless refreshed (every third of
    /// it): an instance that dies leaves no ghost for longer.
    pub presence_ttl: Duration,
    /// Live messages held for one subscription while it recovers; more
    /// and it is told to resubscribe.
    pub max_pending: usize,
}

impl HubSettings {
    pub fn new(instance_id: impl Into<String>) -> Self {
        Self {
            instance_id: instance_id.into(),
            max_message_bytes: 64 * 1024,
            outbound_queue: 256,
            outbound_bytes: 1024 * 1024,
            ping_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            handler_concurrency: 64,
            per_connection_concurrency: 8,
            max_topics: 32,
            max_connections_per_user: 16,
            user_history: Some(HistoryOptions {
                size: 100,
                ttl: Duration::from_secs(600),
            }),
            presence_ttl: Duration::from_secs(30),
            max_pending: 1024,
        }
    }
}

/// A connection's id, unique within the process.
pub type ConnId = u64;

/// The topic a user's notifications go to.
pub(crate) fn user_topic(uid: &str) -> String {
    format!("user:{uid}")
}

/// Where this instance counts each user's open sockets, and the channel
/// (uid, opened) that feeds the one task applying the counts in order.
pub(crate) type SocketCounts = (Arc<dyn SocketRegistry>, mpsc::Sender<(String, bool)>);

/// What a hub is built from (see [`HubBuilder`](crate::HubBuilder)).
pub(crate) struct Parts {
    pub(crate) settings: HubSettings,
    pub(crate) shutdown: CancellationToken,
    pub(crate) handlers: HashMap<String, Arc<dyn MessageHandler>>,
    pub(crate) namespaces: Namespaces,
    pub(crate) fanout: Option<Arc<dyn Fanout>>,
    pub(crate) history: Option<Arc<dyn TopicHistory>>,
    pub(crate) presence: Option<Arc<dyn PresenceStore>>,
    pub(crate) socket_counts: Option<SocketCounts>,
    pub(crate) tombstones: Option<Arc<dyn ports::UserRepository>>,
}

pub(crate) struct HubInner {
    settings: HubSettings,
    registry: RwLock<registry::Registry>,
    handlers: HashMap<String, Arc<dyn MessageHandler>>,
    pub(crate) handler_permits: Arc<Semaphore>,
    shutdown: CancellationToken,
    next_id: AtomicU64,
    fanout: Option<Arc<dyn Fanout>>,
    socket_counts: Option<SocketCounts>,
    namespaces: Namespaces,
    history: Option<Arc<dyn TopicHistory>>,
    presence: Option<Arc<dyn PresenceStore>>,
    /// Deliveries waiting for an ack: `<uid> <delivery>` -> the waiter.
    acks: std::sync::Mutex<HashMap<String, tokio::sync::oneshot::Sender<()>>>,
    /// Where the upgrade learns that a uid's account was deleted (a token
    /// issued before that opens no socket).
    tombstones: Option<Arc<dyn ports::UserRepository>>,
}

/// The WebSocket hub. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<HubInner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("settings", &self.inner.settings)
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Hub {
    /// The hub made of `parts`.
    pub(crate) fn from_parts(parts: Parts) -> Self {
        let permits = parts.settings.handler_concurrency.max(1);
        Self {
            inner: Arc::new(HubInner {
                settings: parts.settings,
                registry: RwLock::default(),
                handlers: parts.handlers,
                handler_permits: Arc::new(Semaphore::new(permits)),
                shutdown: parts.shutdown,
                next_id: AtomicU64::new(1),
                fanout: parts.fanout,
                socket_counts: parts.socket_counts,
                namespaces: parts.namespaces,
                history: parts.history,
                presence: parts.presence,
                acks: std::sync::Mutex::default(),
                tombstones: parts.tombstones,
            }),
        }
    }

    pub fn settings(&self) -> &HubSettings {
        &self.inner.settings
    }

    pub(crate) fn fanout(&self) -> Option<&Arc<dyn Fanout>> {
        self.inner.fanout.as_ref()
    }

    pub(crate) fn socket_registry(&self) -> Option<&Arc<dyn SocketRegistry>> {
        self.inner.socket_counts.as_ref().map(|(r, _)| r)
    }

    pub(crate) fn history(&self) -> Option<&Arc<dyn TopicHistory>> {
        self.inner.history.as_ref()
    }

    pub(crate) fn account_tombstones(&self) -> Option<&Arc<dyn ports::UserRepository>> {
        self.inner.tombstones.as_ref()
    }

    pub(crate) fn presence_store(&self) -> Option<&Arc<dyn PresenceStore>> {
        self.inner.presence.as_ref()
    }

    /// Cancelled when the hub shuts down.
    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Whether `shutdown` was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// Closes every connection with 1001 (going away) and refuses new ones.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }
}

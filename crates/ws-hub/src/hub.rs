//! The hub: who is connected, what they subscribed to, how messages reach
//! them, and which handler answers which message type.

use crate::envelope;
use crate::handlers::MessageHandler;
use crate::topics::{Namespaces, Sub};
use bytestring::ByteString;
use domain::FirebaseUid;
use ports::{
    Audience, Disconnect, Fanout, FanoutMessage, FanoutSink, HistoryOptions, Notification,
    PresenceStore, SocketRegistry, StreamPosition, TopicHistory,
};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
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

struct Conn {
    uid: FirebaseUid,
    tx: Arc<crate::outbox::Outbox>,
    /// Topics joined (besides its user's own, joined at once).
    topics: HashSet<String>,
    /// Topics where it is in the presence set.
    present_in: Vec<String>,
    /// Cancelled when the hub drops the connection (slow client, shutdown,
    /// a disconnect order).
    kick: Kick,
}

/// How the hub stops one connection: the token, and the close it should
/// get (set first, when the hub has a reason to give).
#[derive(Clone)]
pub(crate) struct Kick {
    pub(crate) token: CancellationToken,
    pub(crate) reason: Arc<OnceLock<Disconnect>>,
}

impl Kick {
    fn with(&self, reason: &Disconnect) {
        let _ = self.reason.set(reason.clone());
        self.token.cancel();
    }
}

#[derive(Default)]
struct Registry {
    conns: HashMap<ConnId, Conn>,
    by_user: HashMap<FirebaseUid, HashSet<ConnId>>,
    by_topic: HashMap<String, HashMap<ConnId, Sub>>,
}

/// The topic a user's notifications go to.
pub(crate) fn user_topic(uid: &str) -> String {
    format!("user:{uid}")
}

pub(crate) struct HubInner {
    pub(crate) settings: HubSettings,
    registry: RwLock<Registry>,
    handlers: RwLock<HashMap<String, Arc<dyn MessageHandler>>>,
    pub(crate) handler_permits: Arc<Semaphore>,
    pub(crate) shutdown: CancellationToken,
    next_id: AtomicU64,
    fanout: OnceLock<Arc<dyn Fanout>>,
    /// Where this instance counts each user's open sockets (for support).
    socket_counts: OnceLock<mpsc::Sender<(String, bool)>>,
    socket_registry: OnceLock<Arc<dyn SocketRegistry>>,
    pub(crate) namespaces: RwLock<Namespaces>,
    history: OnceLock<Arc<dyn TopicHistory>>,
    presence: OnceLock<Arc<dyn PresenceStore>>,
    /// Deliveries waiting for an ack: `<uid> <delivery>` -> the waiter.
    acks: std::sync::Mutex<HashMap<String, tokio::sync::oneshot::Sender<()>>>,
    /// Where the upgrade learns that a uid's account was deleted (a token
    /// issued before that opens no socket).
    tombstones: OnceLock<Arc<dyn ports::UserRepository>>,
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

/// Why a send to one connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendOutcome {
    Queued,
    /// Its queue was full: the connection was dropped.
    Kicked,
    Gone,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Hub {
    /// A hub with the built-in handlers (`echo`, `subscribe`, `unsubscribe`).
    pub fn new(settings: HubSettings) -> Self {
        Self::with_shutdown(settings, &CancellationToken::new())
    }

    /// A hub that shuts down (closing its sockets with 1001 and refusing new
    /// ones) when `shutdown` is cancelled, as every long-running part of
    /// the process does.
    pub fn with_shutdown(settings: HubSettings, shutdown: &CancellationToken) -> Self {
        let permits = settings.handler_concurrency.max(1);
        let user_history = settings.user_history;
        let hub = Self {
            inner: Arc::new(HubInner {
                settings,
                registry: RwLock::default(),
                handlers: RwLock::default(),
                handler_permits: Arc::new(Semaphore::new(permits)),
                shutdown: shutdown.child_token(),
                next_id: AtomicU64::new(1),
                fanout: OnceLock::new(),
                socket_counts: OnceLock::new(),
                socket_registry: OnceLock::new(),
                namespaces: RwLock::new(Namespaces::builtin(user_history)),
                history: OnceLock::new(),
                presence: OnceLock::new(),
                acks: std::sync::Mutex::default(),
                tombstones: OnceLock::new(),
            }),
        };
        crate::handlers::register_builtins(&hub);
        hub
    }

    pub fn settings(&self) -> &HubSettings {
        &self.inner.settings
    }

    /// Routes inbound messages of type `kind` to `handler` (replacing any).
    pub fn on(&self, kind: &str, handler: Arc<dyn MessageHandler>) -> &Self {
        write(&self.inner.handlers).insert(kind.to_owned(), handler);
        self
    }

    /// The message types with a handler, sorted (`refresh` is answered by
    /// the connection itself and is not among them).
    pub fn handler_kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = read(&self.inner.handlers).keys().cloned().collect();
        kinds.sort();
        kinds
    }

    pub(crate) fn handler(&self, kind: &str) -> Option<Arc<dyn MessageHandler>> {
        read(&self.inner.handlers).get(kind).cloned()
    }

    /// Carries notifications to and from other instances through `fanout`.
    /// Call once, before `fanout.subscribe(hub)`.
    pub fn set_fanout(&self, fanout: Arc<dyn Fanout>) {
        let _ = self.inner.fanout.set(fanout);
    }

    /// Counts each user's open sockets in `registry`, in the order they
    /// open and close (one task applies them), off the connection's path: a
    /// failed or dropped count is logged, never felt by a client.
    pub fn set_socket_registry(&self, registry: Arc<dyn SocketRegistry>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (tx, mut rx) = mpsc::channel::<(String, bool)>(10_000);
        if self.inner.socket_counts.set(tx).is_err() {
            return;
        }
        let _ = self.inner.socket_registry.set(registry.clone());
        let presence = registry;
        runtime.spawn(async move {
            while let Some((uid, opened)) = rx.recv().await {
                let done = if opened {
                    presence.opened(&uid).await
                } else {
                    presence.closed(&uid).await
                };
                if let Err(e) = done {
                    tracing::debug!(error = %e, "socket count not updated");
                }
            }
        });
    }

    fn count_socket(&self, uid: &FirebaseUid, opened: bool) {
        if let Some(tx) = self.inner.socket_counts.get()
            && tx.try_send((uid.as_str().to_owned(), opened)).is_err()
        {
            tracing::debug!("socket count dropped (the counter is behind)");
        }
    }

    pub(crate) fn fanout(&self) -> Option<&Arc<dyn Fanout>> {
        self.inner.fanout.get()
    }

    pub(crate) fn socket_registry(&self) -> Option<&Arc<dyn SocketRegistry>> {
        self.inner.socket_registry.get()
    }

    /// Keeps the histories of recoverable topics in `history` (usually the
    /// same Redis as the fan-out, which publishes recorded messages).
    pub fn set_history(&self, history: Arc<dyn TopicHistory>) {
        let _ = self.inner.history.set(history);
    }

    pub(crate) fn history(&self) -> Option<&Arc<dyn TopicHistory>> {
        self.inner.history.get()
    }

    /// Where presence is kept; refreshes this instance's entries every
    /// third of `presence_ttl` until the hub shuts down.
    pub fn set_presence(&self, store: Arc<dyn PresenceStore>) {
        if self.inner.presence.set(store.clone()).is_err() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(crate::topics::refresh_presence(self.clone(), store));
        }
    }

    /// Refuses the upgrade to a token issued before its uid's account was
    /// deleted (`users` keeps the tombstones). Call once, at start.
    pub fn set_account_tombstones(&self, users: Arc<dyn ports::UserRepository>) {
        let _ = self.inner.tombstones.set(users);
    }

    pub(crate) fn account_tombstones(&self) -> Option<&Arc<dyn ports::UserRepository>> {
        self.inner.tombstones.get()
    }

    pub(crate) fn presence_store(&self) -> Option<&Arc<dyn PresenceStore>> {
        self.inner.presence.get()
    }

    /// How many sockets this instance holds for `uid`.
    pub(crate) fn local_sockets(&self, uid: &FirebaseUid) -> usize {
        read(&self.inner.registry)
            .by_user
            .get(uid)
            .map_or(0, HashSet::len)
    }

    /// How many connections here are subscribed to `topic`.
    #[cfg(test)]
    pub(crate) fn local_sockets_in(&self, topic: &str) -> usize {
        read(&self.inner.registry)
            .by_topic
            .get(topic)
            .map_or(0, HashMap::len)
    }

    /// Waits for `<uid> <delivery>` to be acknowledged (see `acked`).
    pub(crate) fn await_ack(&self, key: String) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.acks().insert(key, tx);
        rx
    }

    pub(crate) fn forget_ack(&self, key: &str) {
        self.acks().remove(key);
    }

    /// A socket acknowledged `<uid> <delivery>`: its waiter, if on this
    /// instance, stops waiting.
    pub(crate) fn acked(&self, key: &str) {
        if let Some(tx) = self.acks().remove(key) {
            let _ = tx.send(());
        }
    }

    fn acks(&self) -> std::sync::MutexGuard<'_, HashMap<String, tokio::sync::oneshot::Sender<()>>> {
        self.inner
            .acks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn connection_count(&self) -> usize {
        read(&self.inner.registry).conns.len()
    }

    /// Whether `shutdown` was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// Closes every connection with 1001 (going away) and refuses new ones.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Adds a connection of `uid`; `None` if the user already holds
    /// `max_connections_per_user` sockets here.
    pub(crate) fn register(
        &self,
        uid: FirebaseUid,
    ) -> Option<(ConnId, crate::outbox::Receiver, Kick)> {
        let mut reg = write(&self.inner.registry);
        let held = reg.by_user.get(&uid).map_or(0, HashSet::len);
        let max = self.inner.settings.max_connections_per_user;
        if max > 0 && held >= max {
            return None;
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = crate::outbox::channel(
            self.inner.settings.outbound_queue,
            self.inner.settings.outbound_bytes,
        );
        let kick = Kick {
            token: self.inner.shutdown.child_token(),
            reason: Arc::new(OnceLock::new()),
        };
        reg.by_user.entry(uid.clone()).or_default().insert(id);
        reg.by_topic
            .entry(user_topic(uid.as_str()))
            .or_default()
            .insert(id, Sub::default());
        self.count_socket(&uid, true);
        reg.conns.insert(
            id,
            Conn {
                uid,
                tx,
                topics: HashSet::new(),
                present_in: Vec::new(),
                kick: kick.clone(),
            },
        );
        metrics::gauge!("ws_connections").set(reg.conns.len() as f64);
        Some((id, rx, kick))
    }

    pub(crate) fn unregister(&self, id: ConnId) {
        let mut reg = write(&self.inner.registry);
        let Some(conn) = reg.conns.remove(&id) else {
            return;
        };
        self.count_socket(&conn.uid, false);
        if let Some(set) = reg.by_user.get_mut(&conn.uid) {
            set.remove(&id);
            if set.is_empty() {
                reg.by_user.remove(&conn.uid);
            }
        }
        let own = user_topic(conn.uid.as_str());
        for topic in conn.topics.iter().chain(std::iter::once(&own)) {
            if let Some(set) = reg.by_topic.get_mut(topic) {
                set.remove(&id);
                if set.is_empty() {
                    reg.by_topic.remove(topic);
                }
            }
        }
        metrics::gauge!("ws_connections").set(reg.conns.len() as f64);
        drop(reg);
        for topic in conn.present_in {
            crate::topics::left(self, id, &conn.uid, topic);
        }
    }

    /// Joins `topic`; false if the connection is at its topic limit. A
    /// `recovering` subscription holds live messages back until
    /// [`Hub::go_live`].
    pub(crate) fn subscribe(&self, id: ConnId, topic: &str, recovering: bool) -> bool {
        let mut reg = write(&self.inner.registry);
        let max = self.inner.settings.max_topics;
        let Some(conn) = reg.conns.get_mut(&id) else {
            return false;
        };
        let own = topic == user_topic(conn.uid.as_str());
        if !own {
            if !conn.topics.contains(topic) && conn.topics.len() >= max {
                return false;
            }
            conn.topics.insert(topic.to_owned());
        }
        let sub = reg
            .by_topic
            .entry(topic.to_owned())
            .or_default()
            .entry(id)
            .or_default();
        *sub = Sub::default();
        if recovering {
            sub.pending = Some(Vec::new());
        }
        true
    }

    /// Leaves `topic`; true if the connection was in its presence set.
    pub(crate) fn unsubscribe(&self, id: ConnId, topic: &str) -> bool {
        let mut reg = write(&self.inner.registry);
        let mut was_present = false;
        if let Some(conn) = reg.conns.get_mut(&id) {
            conn.topics.remove(topic);
            let before = conn.present_in.len();
            conn.present_in.retain(|t| t != topic);
            was_present = conn.present_in.len() != before;
        }
        if let Some(set) = reg.by_topic.get_mut(topic) {
            set.remove(&id);
            if set.is_empty() {
                reg.by_topic.remove(topic);
            }
        }
        was_present
    }

    /// A subscription that lost messages: it ends (leaving the presence set
    /// as an unsubscribe would) and the client is told to resubscribe.
    fn lost(&self, id: ConnId, topic: &str) {
        let uid = read(&self.inner.registry)
            .conns
            .get(&id)
            .map(|c| c.uid.clone());
        if self.unsubscribe(id, topic)
            && let Some(uid) = uid
        {
            crate::topics::left(self, id, &uid, topic.to_owned());
        }
        crate::topics::tell_to_resubscribe(self, id, topic);
    }

    /// Records that the connection is in `topic`'s presence set (refreshed
    /// until it leaves); false if it is gone or already there.
    pub(crate) fn mark_present(&self, id: ConnId, topic: &str) -> bool {
        let mut reg = write(&self.inner.registry);
        match reg.conns.get_mut(&id) {
            Some(conn) if !conn.present_in.iter().any(|t| t == topic) => {
                conn.present_in.push(topic.to_owned());
                true
            }
            _ => false,
        }
    }

    /// Every (topic, connection, uid) in a presence set on this instance.
    pub(crate) fn present(&self) -> Vec<(String, ConnId, String)> {
        let reg = read(&self.inner.registry);
        reg.conns
            .iter()
            .flat_map(|(id, c)| {
                c.present_in
                    .iter()
                    .map(move |t| (t.clone(), *id, c.uid.as_str().to_owned()))
            })
            .collect()
    }

    /// Ends a recovery: the subscription has been sent everything up to
    /// `position` (its `subscribed` reply and what it missed); the live
    /// messages held meanwhile that come after it follow, then it is live.
    /// With no position (the history could not be read) every held message
    /// follows and the offsets are taken as they come.
    pub(crate) fn go_live(&self, id: ConnId, topic: &str, position: Option<&StreamPosition>) {
        let mut reg = write(&self.inner.registry);
        let Some(tx) = reg.conns.get(&id).map(|c| c.tx.clone()) else {
            return;
        };
        let Some(sub) = reg.by_topic.get_mut(topic).and_then(|s| s.get_mut(&id)) else {
            return;
        };
        let pending = sub.pending.take().unwrap_or_default();
        if let Some(p) = position {
            sub.seen(p);
        }
        let mut resync = false;
        for (p, text) in pending {
            match sub.admit(&p) {
                crate::topics::Admit::Deliver => {
                    if tx.try_send(text).is_err() {
                        resync = true;
                        break;
                    }
                }
                crate::topics::Admit::Duplicate => {}
                crate::topics::Admit::Gap => {
                    resync = true;
                    break;
                }
            }
        }
        if resync {
            drop(reg);
            self.lost(id, topic);
        }
    }

    /// Queues `text` for one connection (what every reply and notification
    /// goes through), without waiting. A full queue means
    /// the client does not keep up: it is disconnected rather than buffered.
    pub(crate) fn send_to(&self, id: ConnId, text: ByteString) -> SendOutcome {
        let Some(tx) = read(&self.inner.registry)
            .conns
            .get(&id)
            .map(|c| c.tx.clone())
        else {
            return SendOutcome::Gone;
        };
        match tx.try_send(text) {
            Ok(()) => SendOutcome::Queued,
            Err((crate::outbox::TrySendError::Full, _)) => {
                self.kick_slow(id);
                SendOutcome::Kicked
            }
            Err((crate::outbox::TrySendError::Closed, _)) => SendOutcome::Gone,
        }
    }

    /// Queues a reply to the connection's own request, waiting for room: a
    /// client that sends requests gets backpressure (we stop reading it)
    /// rather than a disconnect. Only a client that does not drain its queue
    /// for `idle_timeout` is dropped.
    pub(crate) async fn reply_to(&self, id: ConnId, kind: &str, text: ByteString) -> SendOutcome {
        let (tx, kick) = {
            let reg = read(&self.inner.registry);
            match reg.conns.get(&id) {
                Some(c) => (c.tx.clone(), c.kick.token.clone()),
                None => return SendOutcome::Gone,
            }
        };
        tokio::select! {
            sent = tokio::time::timeout(self.inner.settings.idle_timeout, tx.send(text)) => match sent {
                Ok(Ok(())) => {
                    metrics::counter!("ws_messages_out_total", "type" => kind.to_owned()).increment(1);
                    SendOutcome::Queued
                }
                Ok(Err(_)) => SendOutcome::Gone,
                Err(_) => {
                    metrics::counter!("ws_slow_client_disconnects_total").increment(1);
                    tracing::warn!(conn = id, "client has not drained its replies; disconnecting it");
                    self.unregister(id);
                    kick.cancel();
                    SendOutcome::Kicked
                }
            },
            () = kick.cancelled() => SendOutcome::Gone,
        }
    }

    /// The connections an audience covers, right now.
    fn targets(&self, audience: &Audience) -> Vec<ConnId> {
        let reg = read(&self.inner.registry);
        match audience {
            Audience::User(uid) => reg
                .by_user
                .get(uid)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default(),
            Audience::Topic(t) => reg
                .by_topic
                .get(t)
                .map(|s| s.keys().copied().collect())
                .unwrap_or_default(),
            Audience::Everyone => reg.conns.keys().copied().collect(),
        }
    }

    /// Delivers to the sockets on this instance. Returns how many got it.
    pub fn deliver_local(&self, audience: &Audience, notification: &Notification) -> usize {
        let topic = match audience {
            Audience::Topic(t) => Some(t.as_str()),
            Audience::User(_) | Audience::Everyone => None,
        };
        let text = ByteString::from(envelope::render_message(notification, topic, None));
        self.deliver_text(audience, &notification.kind, text)
    }

    /// Delivers a recorded message of `topic` to its subscribers here, in
    /// offset order: held back while a subscription recovers, dropped if
    /// it was already sent, and a subscription that missed one (the
    /// fan-out lost it) is told to resubscribe. Returns how many got it.
    pub fn deliver_recorded(
        &self,
        topic: &str,
        position: &StreamPosition,
        notification: &Notification,
    ) -> usize {
        let text = ByteString::from(envelope::render_message(
            notification,
            Some(topic),
            Some(position),
        ));
        let max_pending = self.inner.settings.max_pending;
        let mut delivered = 0;
        let mut resync = Vec::new();
        let mut kicked = Vec::new();
        {
            let mut guard = write(&self.inner.registry);
            let reg = &mut *guard;
            let Some(subs) = reg.by_topic.get_mut(topic) else {
                return 0;
            };
            for (id, sub) in subs.iter_mut() {
                if let Some(pending) = &mut sub.pending {
                    if pending.len() < max_pending {
                        pending.push((position.clone(), text.clone()));
                    } else {
                        resync.push(*id);
                    }
                    continue;
                }
                match sub.admit(position) {
                    crate::topics::Admit::Deliver => {}
                    crate::topics::Admit::Duplicate => continue,
                    crate::topics::Admit::Gap => {
                        resync.push(*id);
                        continue;
                    }
                }
                let Some(conn) = reg.conns.get(id) else {
                    continue;
                };
                match conn.tx.try_send(text.clone()) {
                    Ok(()) => delivered += 1,
                    Err((crate::outbox::TrySendError::Full, _)) => kicked.push(*id),
                    Err((crate::outbox::TrySendError::Closed, _)) => {}
                }
            }
        }
        for id in resync {
            self.lost(id, topic);
        }
        for id in kicked {
            self.kick_slow(id);
        }
        if delivered > 0 {
            metrics::counter!("ws_messages_out_total", "type" => notification.kind.clone())
                .increment(delivered as u64);
        }
        delivered
    }

    /// Drops a connection whose queue is full.
    fn kick_slow(&self, id: ConnId) {
        let kick = read(&self.inner.registry)
            .conns
            .get(&id)
            .map(|c| c.kick.token.clone());
        if let Some(kick) = kick {
            metrics::counter!("ws_slow_client_disconnects_total").increment(1);
            tracing::warn!(
                conn = id,
                "client too slow to drain its queue; disconnecting it"
            );
            self.unregister(id);
            kick.cancel();
        }
    }

    /// Closes the sockets on this instance that `audience` covers, with
    /// `reason` (after a `disconnect` notice, queued behind what they have
    /// not been sent yet). Returns how many.
    pub fn disconnect_local(&self, audience: &Audience, reason: &Disconnect) -> usize {
        let notice = crate::notifier::disconnect_notice(reason);
        self.deliver_local(audience, &notice);
        let kicks: Vec<Kick> = {
            let reg = read(&self.inner.registry);
            self.targets(audience)
                .iter()
                .filter_map(|id| reg.conns.get(id).map(|c| c.kick.clone()))
                .collect()
        };
        for kick in &kicks {
            kick.with(reason);
        }
        if !kicks.is_empty() {
            metrics::counter!("ws_disconnects_total", "code" => reason.code.to_string())
                .increment(kicks.len() as u64);
            tracing::info!(sockets = kicks.len(), code = reason.code, reason = %reason.reason, "closing sockets");
        }
        kicks.len()
    }

    fn deliver_text(&self, audience: &Audience, kind: &str, text: ByteString) -> usize {
        let mut delivered = 0;
        for id in self.targets(audience) {
            if self.send_to(id, text.clone()) == SendOutcome::Queued {
                delivered += 1;
            }
        }
        if delivered > 0 {
            metrics::counter!("ws_messages_out_total", "type" => kind.to_owned())
                .increment(delivered as u64);
        }
        delivered
    }
}

impl FanoutSink for Hub {
    fn deliver(&self, message: FanoutMessage) {
        if let Some(key) = &message.acked {
            return self.acked(key);
        }
        if let Some(position) = &message.position {
            // Recorded messages are delivered from here on every instance,
            // the publisher's included, so each sees one order.
            let topic = match &message.audience {
                Audience::Topic(t) => t.clone(),
                Audience::User(uid) => user_topic(uid.as_str()),
                Audience::Everyone => return,
            };
            self.deliver_recorded(&topic, position, &message.notification);
            return;
        }
        if message.origin == self.inner.settings.instance_id {
            return; // delivered locally when it was published
        }
        match &message.disconnect {
            Some(reason) => {
                self.disconnect_local(&message.audience, reason);
            }
            None => {
                self.deliver_local(&message.audience, &message.notification);
            }
        }
    }
}

//! Pushing messages to connected realtime clients, on this instance or any.

use async_trait::async_trait;
use domain::FirebaseUid;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use thiserror::Error;

/// Who a notification is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Audience {
    /// Every open socket of one user.
    User(FirebaseUid),
    /// Every socket subscribed to a topic.
    Topic(String),
    /// Every open socket.
    Everyone,
}

/// A server-to-client message: becomes the envelope `{"type", "data"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    #[serde(rename = "type")]
    pub kind: String,
    pub data: serde_json::Value,
    /// A delivery id the client acknowledges (`ack`); set by
    /// [`Realtime::deliver`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
}

impl Notification {
    pub fn new(kind: impl Into<String>, data: serde_json::Value) -> Self {
        Self {
            kind: kind.into(),
            data,
            delivery: None,
        }
    }
}

/// Why the server closes a client's sockets: a WebSocket close code
/// (4000-4999 are the application's) and a short reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disconnect {
    pub code: u16,
    pub reason: String,
}

impl Disconnect {
    /// The socket's token expired and no fresh one came (`refresh`).
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// The account was deleted.
    pub const ACCOUNT_DELETED: u16 = 4003;

    pub fn account_deleted() -> Self {
        Self {
            code: Self::ACCOUNT_DELETED,
            reason: "account deleted".into(),
        }
    }

    pub fn token_expired() -> Self {
        Self {
            code: Self::TOKEN_EXPIRED,
            reason: "token expired".into(),
        }
    }
}

#[derive(Debug, Error)]
pub enum NotifyError {
    /// Other instances could not be reached; local sockets were still served.
    #[error("realtime fan-out unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

/// Sends notifications to connected clients. Delivery is best-effort: a
/// client that is not connected misses the message unless the topic keeps
/// history (see [`Realtime`] for acknowledged delivery).
#[async_trait]
pub trait Notifier: Send + Sync + 'static {
    /// Delivers `notification` to every socket of `audience`, on every instance.
    ///
    /// MUST deliver to local sockets even when returning `Unavailable` for
    /// the fan-out to other instances.
    async fn notify(
        &self,
        audience: &Audience,
        notification: &Notification,
    ) -> Result<(), NotifyError>;

    /// Closes every socket of `audience`, on every instance, with `reason`.
    ///
    /// MUST close local sockets even when returning `Unavailable` for the
    /// fan-out to other instances.
    async fn disconnect(&self, audience: &Audience, reason: &Disconnect)
    -> Result<(), NotifyError>;

    /// Drops what realtime keeps about `uid` (the history of the user's own
    /// topic, where `profile.updated` and deliveries are recorded): part of
    /// an account's deletion.
    async fn forget_user(&self, uid: &FirebaseUid) -> Result<(), NotifyError>;
}

/// A notification crossing instances, or an order to close sockets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FanoutMessage {
    /// The instance that published it (which has already delivered it locally).
    pub origin: String,
    pub audience: Audience,
    /// What the sockets get. For a disconnect it is a `disconnect` notice
    /// (so an instance of an older version, which reads only this, still
    /// tells the client).
    pub notification: Notification,
    /// Set: close the audience's sockets with this reason after the notice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect: Option<Disconnect>,
    /// Set on a recorded message (see [`TopicHistory`]): its place in the
    /// topic's history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<StreamPosition>,
    /// Set: a socket acknowledged this delivery id (audience and
    /// notification are ignored; instances waiting for it stop waiting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked: Option<String>,
}

#[derive(Debug, Error)]
pub enum FanoutError {
    #[error("fan-out transport unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

/// Receives fan-out messages from other instances.
pub trait FanoutSink: Send + Sync + 'static {
    /// Called once per message; MUST NOT block (hand it to a queue).
    fn deliver(&self, message: FanoutMessage);
}

/// Carries notifications between instances (e.g. Redis pub/sub).
#[async_trait]
pub trait Fanout: Send + Sync + 'static {
    /// Sends `message` to every subscribed instance, including this one.
    async fn publish(&self, message: &FanoutMessage) -> Result<(), FanoutError>;

    /// Starts delivering every published message to `sink` until `stop` is
    /// cancelled; resubscribes by itself after a reconnect.
    async fn subscribe(
        &self,
        sink: Arc<dyn FanoutSink>,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<(), FanoutError>;
}

// ---------------------------------------------------------------------------
// History and recovery, presence, application-authorized namespaces, and
// socket-first delivery.
// ---------------------------------------------------------------------------

/// Where a topic's history stands. Offsets grow by one per message; the
/// epoch changes when the history was lost (Redis restarted empty, or the
/// topic sat idle past its metadata's life), so an old offset means nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamPosition {
    pub offset: u64,
    pub epoch: String,
}

/// How much of a topic's past is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryOptions {
    /// Messages kept (the oldest go first).
    pub size: usize,
    /// How long the history lives after the topic's last message.
    pub ttl: std::time::Duration,
}

impl HistoryOptions {
    /// How long a topic's offset and epoch outlive its last message: a
    /// client that comes back within it is told exactly what it lost
    /// (`recovered: false` once the messages expired) rather than seeing the
    /// offsets restart.
    pub fn meta_ttl(&self) -> std::time::Duration {
        self.ttl
            .saturating_mul(10)
            .max(std::time::Duration::from_secs(24 * 3600))
    }
}

/// One message of a topic's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publication {
    pub offset: u64,
    pub notification: Notification,
}

/// What a read of a topic's history found.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRead {
    /// The topic's current position (the last message's offset).
    pub position: StreamPosition,
    /// What came after the position asked for, oldest first (only when
    /// `recovered`).
    pub publications: Vec<Publication>,
    /// True when `publications` is everything after the position asked
    /// for: same epoch, and nothing between it and the history's start
    /// was lost. False when there was nothing to recover from.
    pub recovered: bool,
}

/// A fan-out that also keeps topics' histories: a recorded message is
/// appended and published in one step, so instances receive a topic's
/// messages in offset order.
#[async_trait]
pub trait TopicHistory: Send + Sync + 'static {
    /// Appends `message` (whose audience is `Audience::Topic(topic)`) to
    /// the topic's history and publishes it to every instance with its
    /// position (`FanoutMessage::position`).
    async fn publish_recorded(
        &self,
        topic: &str,
        message: &FanoutMessage,
        history: &HistoryOptions,
    ) -> Result<StreamPosition, FanoutError>;

    /// The topic's position and, with `since`, what came after it.
    async fn history(
        &self,
        topic: &str,
        since: Option<&StreamPosition>,
        history: &HistoryOptions,
    ) -> Result<HistoryRead, FanoutError>;

    /// Drops the topic's history and position (a deleted user's own
    /// topic): what it held is gone, and a later message starts a new
    /// epoch, so no client recovers across it.
    async fn forget(&self, topic: &str) -> Result<(), FanoutError>;
}

/// One socket subscribed to a topic with presence on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEntry {
    /// The socket: `<instance>/<connection>`.
    pub client: String,
    pub uid: String,
}

/// Who is subscribed to a topic, across instances. Entries expire unless
/// refreshed, so an instance that dies leaves no ghosts beyond `ttl`.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Adds or refreshes entries (one topic each) for `ttl`.
    async fn join(
        &self,
        entries: &[(String, PresenceEntry)],
        ttl: std::time::Duration,
    ) -> Result<(), FanoutError>;
    async fn leave(&self, topic: &str, client: &str) -> Result<(), FanoutError>;
    /// The live entries of `topic`.
    async fn present(&self, topic: &str) -> Result<Vec<PresenceEntry>, FanoutError>;
}

/// How a notification with a delivery id reached the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketDelivery {
    /// A socket acknowledged it, this long after it was sent.
    Acked(std::time::Duration),
    /// Sent to open sockets, none acknowledged in time.
    Unacknowledged,
    /// The user had no open socket.
    Offline,
}

/// What a namespace of topics (`<namespace>:<name>`) offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NamespaceOptions {
    /// Keep recent messages: clients recover what they missed (`since`).
    pub history: Option<HistoryOptions>,
    /// Track who is subscribed (`presence` requests).
    pub presence: bool,
    /// Tell subscribers when others join and leave (needs `presence`).
    pub join_leave: bool,
    /// Let subscribers publish to the topic themselves (`publish`).
    pub client_publish: bool,
}

/// Who may subscribe to, and publish in, the topics of one namespace: the
/// application implements it (e.g. `room:<id>` for the room's members,
/// asked of a repository port).
#[async_trait]
pub trait TopicPolicy: Send + Sync + 'static {
    /// Whether `uid` may subscribe to `<namespace>:<name>`.
    async fn may_subscribe(&self, uid: &FirebaseUid, name: &str) -> Result<bool, NotifyError>;

    /// Whether `uid` may publish to it (where the namespace allows client
    /// publishing at all). Subscribers may, by default.
    async fn may_publish(&self, uid: &FirebaseUid, name: &str) -> Result<bool, NotifyError> {
        self.may_subscribe(uid, name).await
    }
}

/// Realtime as the application uses it: publish to any topic, ask who is
/// there, and deliver to a user with acknowledgement.
#[async_trait]
pub trait Realtime: Send + Sync + 'static {
    /// Publishes to `topic`'s subscribers on every instance; on a topic
    /// with history the message is recorded and its position returned.
    async fn publish(
        &self,
        topic: &str,
        notification: &Notification,
    ) -> Result<Option<StreamPosition>, NotifyError>;

    /// Who is subscribed to `topic` (a namespace with presence on).
    async fn presence(&self, topic: &str) -> Result<Vec<PresenceEntry>, NotifyError>;

    /// Sends `notification` to `uid`'s sockets marked with `delivery` (the
    /// envelope's `delivery` field) and waits up to `wait` for one of them
    /// to acknowledge it (`{"type": "ack", "data": {"delivery": ..}}`).
    async fn deliver(
        &self,
        uid: &FirebaseUid,
        delivery: &str,
        notification: &Notification,
        wait: std::time::Duration,
    ) -> Result<SocketDelivery, NotifyError>;
}

/// Which way a realtime message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Client to server: a request the hub handles.
    FromClient,
    /// Server to client: a reply or a notification.
    ToClient,
}

/// One envelope type, as documented (the AsyncAPI catalogue is made of
/// these): the code that sends or handles a type describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageDoc {
    /// The envelope's `type`.
    pub kind: &'static str,
    pub direction: Direction,
    pub summary: &'static str,
    /// The JSON Schema of `data`.
    pub data: serde_json::Value,
    /// Sent on topics: the envelope may carry `topic` (and on recoverable
    /// topics `offset` and `epoch`; on acknowledged deliveries `delivery`).
    pub on_topic: bool,
}

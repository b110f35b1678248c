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
}

impl Notification {
    pub fn new(kind: impl Into<String>, data: serde_json::Value) -> Self {
        Self {
            kind: kind.into(),
            data,
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
/// client that is not connected misses the message (use push notifications
/// for what must arrive).
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

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
}

/// A notification crossing instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FanoutMessage {
    /// The instance that published it (which has already delivered it locally).
    pub origin: String,
    pub audience: Audience,
    pub notification: Notification,
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

    /// Starts delivering every published message to `sink` until the process
    /// stops; resubscribes by itself after a reconnect.
    async fn subscribe(&self, sink: Arc<dyn FanoutSink>) -> Result<(), FanoutError>;
}

//! Which handler answers which inbound message type: the handler trait,
//! what a call knows ([`HandlerContext`]), and the routing table the hub
//! was built with.

use super::{ConnId, Hub, SendOutcome};
use async_trait::async_trait;
use bytestring::ByteString;
use domain::FirebaseUid;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

/// What a handler knows about the message it handles.
#[derive(Debug, Clone)]
pub struct HandlerContext {
    /// The authenticated user of the connection.
    pub uid: FirebaseUid,
    pub conn: ConnId,
    /// The request's correlation id, echoed on the reply.
    pub id: Option<String>,
    /// Cancelled when the connection closes or the hub shuts down.
    pub cancel: CancellationToken,
    pub(crate) hub: Hub,
    /// The hub-wide handler slot this call holds, given back before the
    /// call waits for room in its connection's queue: a client that does
    /// not read must never hold a slot every other user needs.
    pub(crate) hub_slot: HubSlot,
}

/// A hub-wide handler slot, held until given back.
#[derive(Clone, Default)]
pub(crate) struct HubSlot(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl std::fmt::Debug for HubSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HubSlot")
    }
}

impl HubSlot {
    pub(crate) fn hold(permit: OwnedSemaphorePermit) -> Self {
        Self(Arc::new(Mutex::new(Some(permit))))
    }

    pub(crate) fn release(&self) {
        drop(
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
    }
}

impl HandlerContext {
    /// Queues a message for this connection, waiting for room (after
    /// giving the hub slot back): the backpressure a client that sends
    /// requests gets.
    pub(crate) async fn reply(&self, kind: &str, text: ByteString) {
        self.hub_slot.release();
        self.hub.reply_to(self.conn, kind, text).await;
    }

    /// Sends a message to this connection (besides the handler's reply).
    pub fn push(&self, kind: &str, data: &Value) {
        let text = ByteString::from(crate::envelope::render(kind, None, data));
        if self.hub.send_to(self.conn, text) == SendOutcome::Queued {
            metrics::counter!("ws_messages_out_total", "type" => kind.to_owned()).increment(1);
        }
    }
}

/// A reply to the caller: `{"type": kind, "id": <request id>, "data": data}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub kind: String,
    pub data: Value,
}

impl Reply {
    pub fn new(kind: impl Into<String>, data: Value) -> Self {
        Self {
            kind: kind.into(),
            data,
        }
    }
}

/// A handler failure, sent as an `error` envelope. `code` is stable;
/// `message` must not hold internal details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct HandlerError {
    pub code: &'static str,
    pub message: String,
}

impl HandlerError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Handles one inbound message type. Runs concurrently with other calls, up
/// to the hub's and the connection's limits.
#[async_trait]
pub trait MessageHandler: Send + Sync + 'static {
    async fn handle(
        &self,
        ctx: &HandlerContext,
        data: Value,
    ) -> Result<Option<Reply>, HandlerError>;
}

impl Hub {
    /// The message types with a handler, sorted (`refresh` is answered by
    /// the connection itself and is not among them).
    pub fn handler_kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.inner.handlers.keys().cloned().collect();
        kinds.sort();
        kinds
    }

    pub(crate) fn handler(&self, kind: &str) -> Option<Arc<dyn MessageHandler>> {
        self.inner.handlers.get(kind).cloned()
    }
}

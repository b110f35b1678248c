//! Handlers for inbound message types, and the built-in ones.

use crate::hub::{ConnId, Hub};
use async_trait::async_trait;
use bytestring::ByteString;
use domain::FirebaseUid;
use serde_json::{Value, json};
use std::sync::Arc;
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
}

impl HandlerContext {
    /// Sends a message to this connection (besides the handler's reply).
    pub fn push(&self, kind: &str, data: &Value) {
        let text = ByteString::from(crate::envelope::render(kind, None, data));
        if self.hub.send_to(self.conn, text) == crate::hub::SendOutcome::Queued {
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

/// `echo`: replies with the same data (for clients to test the channel).
struct Echo;

#[async_trait]
impl MessageHandler for Echo {
    async fn handle(&self, _: &HandlerContext, data: Value) -> Result<Option<Reply>, HandlerError> {
        Ok(Some(Reply::new("echo", data)))
    }
}

/// Topics a user may join: `public:<name>`, and `user:<their own uid>`.
pub fn may_join(uid: &FirebaseUid, topic: &str) -> bool {
    let name_ok = |n: &str| {
        (1..=100).contains(&n.len())
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    };
    match topic.split_once(':') {
        Some(("public", name)) => name_ok(name),
        Some(("user", id)) => id == uid.as_str(),
        _ => false,
    }
}

fn topic_of(data: &Value) -> Result<String, HandlerError> {
    data.get("topic")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| HandlerError::new("invalid_data", "data must be {\"topic\": string}"))
}

/// `subscribe {"topic": ..}` -> `subscribed`.
struct Subscribe;

#[async_trait]
impl MessageHandler for Subscribe {
    async fn handle(
        &self,
        ctx: &HandlerContext,
        data: Value,
    ) -> Result<Option<Reply>, HandlerError> {
        let topic = topic_of(&data)?;
        if !may_join(&ctx.uid, &topic) {
            return Err(HandlerError::new(
                "forbidden_topic",
                "you may join public:<name> and user:<your uid>",
            ));
        }
        if !ctx.hub.subscribe(ctx.conn, &topic) {
            return Err(HandlerError::new(
                "too_many_topics",
                "this connection is at its topic limit",
            ));
        }
        Ok(Some(Reply::new("subscribed", json!({"topic": topic}))))
    }
}

/// `unsubscribe {"topic": ..}` -> `unsubscribed`.
struct Unsubscribe;

#[async_trait]
impl MessageHandler for Unsubscribe {
    async fn handle(
        &self,
        ctx: &HandlerContext,
        data: Value,
    ) -> Result<Option<Reply>, HandlerError> {
        let topic = topic_of(&data)?;
        ctx.hub.unsubscribe(ctx.conn, &topic);
        Ok(Some(Reply::new("unsubscribed", json!({"topic": topic}))))
    }
}

pub(crate) fn register_builtins(hub: &Hub) {
    hub.on("echo", Arc::new(Echo));
    hub.on("subscribe", Arc::new(Subscribe));
    hub.on("unsubscribe", Arc::new(Unsubscribe));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_may_join_public_topics_and_their_own() {
        let uid = FirebaseUid::parse("alice").unwrap();
        assert!(may_join(&uid, "public:news"));
        assert!(may_join(&uid, "user:alice"));
        assert!(!may_join(&uid, "user:bob"));
        assert!(!may_join(&uid, "admin:all"));
        assert!(!may_join(&uid, "public:"));
        assert!(!may_join(&uid, "public:has space"));
        assert!(!may_join(&uid, "news"));
    }
}

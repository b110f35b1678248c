#![doc = include_str!("../README.md")]

mod builder;
pub mod catalogue;
mod connection;
pub mod envelope;
mod handlers;
mod hub;
mod namespaces;
mod notifier;
mod send_queue;
mod socket;
mod upgrade;

pub use builder::HubBuilder;
pub use hub::{
    ConnId, HandlerContext, HandlerError, Hub, HubSettings, INSUFFICIENT_STATE, MessageHandler,
    Reply,
};
pub use namespaces::{AnyUser, MAX_TOPIC_NAME, OwnUser};
pub use notifier::HubNotifier;
pub use socket::{CLOSE_LINGER, SocketHandle, on_connect};
pub use upgrade::{BEARER_PROTOCOL, configure};

/// The notice a socket gets just before the server closes it on purpose:
/// `{"type": "disconnect", "data": {"code", "reason"}}`.
pub const DISCONNECT_TYPE: &str = "disconnect";
/// Sent once when less than [`EXPIRY_NOTICE`] of the socket's token is
/// left: `{"type": "token.expiring", "data": {"expires_at"}}`.
pub const TOKEN_EXPIRING_TYPE: &str = "token.expiring";
/// How long before its token expires a socket is told so.
pub const EXPIRY_NOTICE: std::time::Duration = std::time::Duration::from_secs(60);
/// The envelope that hands a socket a fresh token: `{"type": "refresh",
/// "data": {"token": "<ID token>"}}`, answered with `refreshed`.
pub const REFRESH_TYPE: &str = "refresh";

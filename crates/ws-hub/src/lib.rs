#![doc = include_str!("../README.md")]

mod connection;
pub mod envelope;
mod handlers;
mod hub;
mod notifier;

pub use connection::{BEARER_PROTOCOL, configure};
pub use handlers::{HandlerContext, HandlerError, MessageHandler, Reply, may_join};
pub use hub::{ConnId, Hub, HubSettings};
pub use notifier::HubNotifier;

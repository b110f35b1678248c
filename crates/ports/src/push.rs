//! Sending push notifications to devices.

use async_trait::async_trait;
use domain::PushToken;
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, time::Duration};
use thiserror::Error;

/// A notification for one device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushMessage {
    pub title: Option<String>,
    pub body: Option<String>,
    /// Key/value data delivered to the app.
    pub data: BTreeMap<String, String>,
    /// Deliver at high priority (Android `HIGH`, APNs priority 10).
    pub high_priority: bool,
    pub sound: Option<String>,
    pub badge: Option<u32>,
    /// Messages with the same key replace each other on the device.
    pub collapse_key: Option<String>,
}

#[derive(Debug, Error)]
pub enum SendPushError {
    /// The token is no longer valid (app uninstalled, token rotated): the
    /// caller should delete it.
    #[error("push token unregistered")]
    Unregistered,
    /// The token is malformed or for another project: delete it as well.
    #[error("push token invalid")]
    InvalidToken,
    /// The message is larger than the provider accepts.
    #[error("push payload too large ({size} bytes, max {max})")]
    PayloadTooLarge { size: usize, max: usize },
    /// Temporary: retry, no earlier than `retry_after` if given.
    #[error("push provider unavailable: {reason}")]
    Unavailable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Refused for a reason retrying cannot fix (quota, sender mismatch, auth).
    #[error("push refused: {code}")]
    Rejected { code: String },
    #[error(transparent)]
    Unknown(anyhow::Error),
}

#[async_trait]
pub trait PushSender: Send + Sync + 'static {
    /// Sends `message` to the device holding `token`.
    ///
    /// MUST classify failures: `Unregistered`/`InvalidToken` for dead tokens,
    /// `Unavailable` for what a retry may fix, `Rejected` for the rest.
    async fn send(&self, token: &PushToken, message: &PushMessage) -> Result<(), SendPushError>;
}

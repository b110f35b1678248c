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

impl PushMessage {
    /// The most a message may carry, in bytes of [`payload_size`](Self::payload_size)
    /// (FCM's limit for notification and data messages).
    pub const MAX_PAYLOAD_BYTES: usize = 4096;

    /// The size of what reaches the device: the JSON of the notification
    /// (title, body) and the data map, as FCM counts it.
    pub fn payload_size(&self) -> usize {
        #[derive(Serialize)]
        struct Payload<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            title: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            body: Option<&'a str>,
            data: &'a BTreeMap<String, String>,
        }
        serde_json::to_vec(&Payload {
            title: self.title.as_deref(),
            body: self.body.as_deref(),
            data: &self.data,
        })
        .map_or(usize::MAX, |v| v.len())
    }

    /// `PayloadTooLarge` when the message is over the limit.
    pub fn check_size(&self) -> Result<(), SendPushError> {
        let size = self.payload_size();
        if size > Self::MAX_PAYLOAD_BYTES {
            return Err(SendPushError::PayloadTooLarge {
                size,
                max: Self::MAX_PAYLOAD_BYTES,
            });
        }
        Ok(())
    }

    /// Whether it shows something to the user (a title or a body), as
    /// opposed to a data-only (background) message.
    pub fn is_visible(&self) -> bool {
        self.title.is_some() || self.body.is_some()
    }
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
    /// `Unavailable` for what a retry may fix, `Rejected` for the rest; and
    /// MUST refuse a message over [`PushMessage::MAX_PAYLOAD_BYTES`] with
    /// `PayloadTooLarge` without sending anything.
    async fn send(&self, token: &PushToken, message: &PushMessage) -> Result<(), SendPushError>;

    /// False for a sender that only records messages (local development
    /// without credentials): nothing reaches a device.
    fn is_live(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_size_counts_what_reaches_the_device() {
        let empty = PushMessage::default();
        assert_eq!(empty.payload_size(), r#"{"data":{}}"#.len());
        let m = PushMessage {
            title: Some("Hi".into()),
            body: Some("there".into()),
            data: BTreeMap::from([("k".into(), "v".into())]),
            // Delivery options are not payload.
            sound: Some("default".into()),
            collapse_key: Some("c".into()),
            ..PushMessage::default()
        };
        assert_eq!(
            m.payload_size(),
            r#"{"title":"Hi","body":"there","data":{"k":"v"}}"#.len()
        );
    }

    #[test]
    fn oversize_messages_are_refused_with_their_size() {
        let at_limit = PushMessage {
            data: BTreeMap::from([("k".into(), "x".repeat(4096 - r#"{"data":{"k":""}}"#.len()))]),
            ..PushMessage::default()
        };
        assert_eq!(at_limit.payload_size(), 4096);
        assert!(at_limit.check_size().is_ok());
        let over = PushMessage {
            body: Some("!".into()),
            ..at_limit
        };
        match over.check_size() {
            Err(SendPushError::PayloadTooLarge { size, max }) => {
                assert_eq!((size, max), (over.payload_size(), 4096));
                assert!(size > 4096);
            }
            other => panic!("expected PayloadTooLarge, got {other:?}"),
        }
    }
}

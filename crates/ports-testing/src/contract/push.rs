//! The contract of [`PushSender`].

use domain::PushToken;
use ports::push::{PushMessage, PushSender, SendPushError};
use std::collections::BTreeMap;
use std::time::Duration;

/// A sender under test and the levers a case pulls on the provider behind it
/// (a scripted FCM server for the real adapter).
pub trait PushProviderHarness: Send + Sync {
    fn sender(&self) -> &dyn PushSender;
    /// From now on the provider answers that `token` is no longer registered.
    fn unregister(&self, token: &PushToken);
    /// The provider fails every send as temporarily unavailable, asking to be
    /// retried after `retry_after`, until [`end_outage`](Self::end_outage).
    fn begin_outage(&self, retry_after: Duration);
    fn end_outage(&self);
    /// The tokens the provider accepted a message for, in order.
    fn delivered(&self) -> Vec<PushToken>;
}

fn token(s: &str) -> PushToken {
    PushToken::parse(s).unwrap()
}

fn hello() -> PushMessage {
    PushMessage {
        title: Some("Hello".into()),
        body: Some("from the contract".into()),
        data: BTreeMap::from([("kind".into(), "contract".into())]),
        ..PushMessage::default()
    }
}

pub async fn a_message_to_a_live_token_is_delivered(h: &dyn PushProviderHarness) {
    let t = token("contract-live-token");
    h.sender().send(&t, &hello()).await.unwrap();
    assert_eq!(h.delivered(), vec![t]);
}

pub async fn an_unregistered_token_is_reported_and_nothing_is_delivered(
    h: &dyn PushProviderHarness,
) {
    let t = token("contract-dead-token");
    h.unregister(&t);
    let err = h.sender().send(&t, &hello()).await.unwrap_err();
    assert!(
        matches!(err, SendPushError::Unregistered),
        "expected Unregistered, got {err:?}"
    );
    assert!(h.delivered().is_empty());
}

pub async fn an_oversize_message_is_refused_before_sending(h: &dyn PushProviderHarness) {
    let t = token("contract-size-token");
    let filler = |n: usize| PushMessage {
        data: BTreeMap::from([("k".into(), "x".repeat(n))]),
        ..PushMessage::default()
    };
    let fixed = filler(0).payload_size();
    let over = filler(PushMessage::MAX_PAYLOAD_BYTES - fixed + 1);
    match h.sender().send(&t, &over).await {
        Err(SendPushError::PayloadTooLarge { size, max }) => {
            assert_eq!((size, max), (PushMessage::MAX_PAYLOAD_BYTES + 1, 4096));
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    assert!(h.delivered().is_empty(), "an oversize message went out");
    let at_limit = filler(PushMessage::MAX_PAYLOAD_BYTES - fixed);
    h.sender().send(&t, &at_limit).await.unwrap();
    assert_eq!(h.delivered(), vec![t]);
}

pub async fn an_outage_is_temporary_and_says_when_to_retry(h: &dyn PushProviderHarness) {
    let t = token("contract-outage-token");
    h.begin_outage(Duration::from_secs(7));
    match h.sender().send(&t, &hello()).await {
        Err(SendPushError::Unavailable { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)));
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(h.delivered().is_empty());
    h.end_outage();
    h.sender().send(&t, &hello()).await.unwrap();
    assert_eq!(h.delivered(), vec![t]);
}

/// One `#[tokio::test]` per case. `$make` is a future yielding something
/// that derefs to a [`PushProviderHarness`].
#[macro_export]
macro_rules! push_sender_contract {
    ($make:expr) => {
        macro_rules! push_case {
            ($name:ident) => {
                #[tokio::test]
                async fn $name() {
                    let harness = $make.await;
                    $crate::contract::push::$name(&*harness).await;
                }
            };
        }
        push_case!(a_message_to_a_live_token_is_delivered);
        push_case!(an_unregistered_token_is_reported_and_nothing_is_delivered);
        push_case!(an_oversize_message_is_refused_before_sending);
        push_case!(an_outage_is_temporary_and_says_when_to_retry);
    };
}

//! One message to one device: send, prune a dead token, count the outcome.

use super::*;

/// What became of a message to one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// FCM accepted it.
    Sent,
    /// FCM said the token is dead (unregistered or invalid); it was deleted.
    Pruned,
    /// FCM is temporarily unavailable: a queued message is retried.
    Unavailable,
    /// FCM refused it for good (quota, sender mismatch, APNs/Web push auth).
    Rejected,
    /// Over the payload limit.
    TooLarge,
    /// Something else went wrong (logged).
    Failed,
}

impl DeliveryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Sent => "sent",
            DeliveryOutcome::Pruned => "pruned",
            DeliveryOutcome::Unavailable => "unavailable",
            DeliveryOutcome::Rejected => "rejected",
            DeliveryOutcome::TooLarge => "too_large",
            DeliveryOutcome::Failed => "failed",
        }
    }
}

/// The result for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceDelivery {
    pub token: PushToken,
    pub platform: Option<Platform>,
    pub outcome: DeliveryOutcome,
    /// FCM's error code when it gave one (`UNREGISTERED`, `QUOTA_EXCEEDED`, ...).
    pub code: Option<String>,
    /// For `Unavailable`: when FCM asked to be retried.
    pub retry_after: Option<Duration>,
}

/// Sends one message to one device, deletes the token if FCM says it is
/// dead, and counts the outcome. Never fails: the outcome says what happened.
pub(super) async fn deliver(
    sender: &dyn PushSender,
    tokens: &dyn PushTokenRepository,
    token: &PushToken,
    platform: Option<Platform>,
    message: &PushMessage,
) -> DeviceDelivery {
    let mut d = DeviceDelivery {
        token: token.clone(),
        platform,
        outcome: DeliveryOutcome::Sent,
        code: None,
        retry_after: None,
    };
    match sender.send(token, message).await {
        Ok(()) => {}
        Err(e @ (SendPushError::Unregistered | SendPushError::InvalidToken)) => {
            d.code = Some(
                if matches!(e, SendPushError::Unregistered) {
                    "UNREGISTERED"
                } else {
                    "INVALID_TOKEN"
                }
                .into(),
            );
            match tokens.delete_token(token).await {
                Ok(_) => {
                    d.outcome = DeliveryOutcome::Pruned;
                    metrics::counter!("push_tokens_pruned_total").increment(1);
                    tracing::info!(token = %token.fingerprint(), reason = %e, "dead push token deleted");
                }
                Err(err) => {
                    // Not deleted yet: a queued send is retried (and FCM
                    // answers the same), so the token goes next time.
                    d.outcome = DeliveryOutcome::Failed;
                    tracing::warn!(token = %token.fingerprint(), error = %err, "cannot delete a dead push token");
                }
            }
        }
        Err(SendPushError::Unavailable {
            reason,
            retry_after,
        }) => {
            d.outcome = DeliveryOutcome::Unavailable;
            d.retry_after = retry_after;
            tracing::warn!(token = %token.fingerprint(), %reason, ?retry_after, "push provider unavailable");
        }
        Err(SendPushError::Rejected { code }) => {
            d.outcome = DeliveryOutcome::Rejected;
            tracing::warn!(token = %token.fingerprint(), %code, "push refused; not retried");
            d.code = Some(code);
        }
        Err(e @ SendPushError::PayloadTooLarge { .. }) => {
            d.outcome = DeliveryOutcome::TooLarge;
            tracing::warn!(token = %token.fingerprint(), error = %e, "push payload too large");
        }
        Err(SendPushError::Unknown(e)) => {
            d.outcome = DeliveryOutcome::Failed;
            tracing::error!(token = %token.fingerprint(), error = %format!("{e:#}"), "push send failed");
        }
    }
    metrics::counter!("push_sent_total", "outcome" => d.outcome.as_str()).increment(1);
    d
}

//! A sender for local development: records what would have been sent.

use async_trait::async_trait;
use domain::PushToken;
use ports::{PushMessage, PushSender, SendPushError};
use std::sync::atomic::{AtomicU64, Ordering};

/// Logs each message (the token's fingerprint, never the token) instead of
/// sending it, and answers as if FCM accepted it. Oversize messages are
/// refused as FCM would.
#[derive(Debug, Default)]
pub struct LogPushSender {
    logged: AtomicU64,
}

impl LogPushSender {
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages logged so far.
    pub fn logged(&self) -> u64 {
        self.logged.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl PushSender for LogPushSender {
    async fn send(&self, token: &PushToken, message: &PushMessage) -> Result<(), SendPushError> {
        message.check_size()?;
        self.logged.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            token = %token.fingerprint(),
            title = message.title.as_deref().unwrap_or(""),
            body = message.body.as_deref().unwrap_or(""),
            data_keys = ?message.data.keys().collect::<Vec<_>>(),
            high_priority = message.high_priority,
            "push notification (not sent: no GOOGLE_APPLICATION_CREDENTIALS; logging instead)"
        );
        Ok(())
    }

    fn is_live(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[tokio::test]
    async fn logs_instead_of_sending_but_still_refuses_oversize_messages() {
        let s = LogPushSender::new();
        let t = PushToken::parse("local-device").unwrap();
        s.send(&t, &PushMessage::default()).await.unwrap();
        assert_eq!(s.logged(), 1);
        let big = PushMessage {
            data: BTreeMap::from([("k".into(), "x".repeat(5000))]),
            ..PushMessage::default()
        };
        assert!(matches!(
            s.send(&t, &big).await,
            Err(SendPushError::PayloadTooLarge { .. })
        ));
        assert_eq!(s.logged(), 1);
        assert!(!s.is_live());
    }
}

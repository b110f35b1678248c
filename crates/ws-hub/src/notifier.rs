//! `HubNotifier`: `ports::Notifier` on the hub, across instances.

use crate::hub::Hub;
use async_trait::async_trait;
use ports::{Audience, Disconnect, FanoutMessage, Notification, Notifier, NotifyError};

/// Delivers to this instance's sockets at once, then publishes to the
/// fan-out (if the hub has one) for the others.
#[derive(Debug, Clone)]
pub struct HubNotifier {
    hub: Hub,
}

impl HubNotifier {
    pub fn new(hub: Hub) -> Self {
        Self { hub }
    }

    async fn publish(&self, message: FanoutMessage) -> Result<(), NotifyError> {
        let Some(fanout) = self.hub.fanout() else {
            return Ok(());
        };
        fanout.publish(&message).await.map_err(|e| match e {
            ports::FanoutError::Unavailable(e) => NotifyError::Unavailable(e),
            ports::FanoutError::Unknown(e) => NotifyError::Unknown(e),
        })
    }
}

/// The notice a socket gets just before the server closes it.
pub(crate) fn disconnect_notice(reason: &Disconnect) -> Notification {
    Notification::new(
        crate::DISCONNECT_TYPE,
        serde_json::json!({"code": reason.code, "reason": reason.reason}),
    )
}

#[async_trait]
impl Notifier for HubNotifier {
    async fn notify(
        &self,
        audience: &Audience,
        notification: &Notification,
    ) -> Result<(), NotifyError> {
        self.hub.deliver_local(audience, notification);
        self.publish(FanoutMessage {
            origin: self.hub.settings().instance_id.clone(),
            audience: audience.clone(),
            notification: notification.clone(),
            disconnect: None,
            position: None,
            acked: None,
        })
        .await
    }

    async fn disconnect(
        &self,
        audience: &Audience,
        reason: &Disconnect,
    ) -> Result<(), NotifyError> {
        self.hub.disconnect_local(audience, reason);
        self.publish(FanoutMessage {
            origin: self.hub.settings().instance_id.clone(),
            audience: audience.clone(),
            notification: disconnect_notice(reason),
            disconnect: Some(reason.clone()),
            position: None,
            acked: None,
        })
        .await
    }
}

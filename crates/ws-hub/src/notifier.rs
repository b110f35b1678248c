//! `HubNotifier`: `ports::Notifier` on the hub, across instances.

use crate::hub::Hub;
use async_trait::async_trait;
use ports::{Audience, FanoutMessage, Notification, Notifier, NotifyError};

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
}

#[async_trait]
impl Notifier for HubNotifier {
    async fn notify(
        &self,
        audience: &Audience,
        notification: &Notification,
    ) -> Result<(), NotifyError> {
        self.hub.deliver_local(audience, notification);
        let Some(fanout) = self.hub.fanout() else {
            return Ok(());
        };
        let message = FanoutMessage {
            origin: self.hub.settings().instance_id.clone(),
            audience: audience.clone(),
            notification: notification.clone(),
        };
        fanout.publish(&message).await.map_err(|e| match e {
            ports::FanoutError::Unavailable(e) => NotifyError::Unavailable(e),
            ports::FanoutError::Unknown(e) => NotifyError::Unknown(e),
        })
    }
}

//! `HubNotifier`: `ports::Notifier` and `ports::Realtime` on the hub, across
//! instances.

use crate::hub::{Hub, disconnect_notice, user_topic};
use async_trait::async_trait;
use domain::FirebaseUid;
use ports::{
    Audience, Disconnect, FanoutMessage, Notification, Notifier, NotifyError, PresenceEntry,
    Realtime, SocketDelivery, StreamPosition,
};
use std::time::{Duration, Instant};

/// Delivers to this instance's sockets at once, then publishes to the
/// fan-out (if the hub has one) for the others. A message for a topic
/// with history is recorded and published in one step instead, and every
/// instance (this one too) delivers it as the fan-out hands it over, so
/// all see one order.
#[derive(Debug, Clone)]
pub struct HubNotifier {
    hub: Hub,
}

fn fanout_error(e: ports::FanoutError) -> NotifyError {
    match e {
        ports::FanoutError::Unavailable(e) => NotifyError::Unavailable(e),
        ports::FanoutError::Unknown(e) => NotifyError::Unknown(e),
    }
}

impl HubNotifier {
    pub fn new(hub: Hub) -> Self {
        Self { hub }
    }

    async fn publish(&self, message: FanoutMessage) -> Result<(), NotifyError> {
        self.hub.fan_out(&message).await.map_err(fanout_error)
    }

    /// Sends to `audience`; on a recoverable topic returns the message's
    /// position.
    async fn send(
        &self,
        audience: &Audience,
        notification: &Notification,
    ) -> Result<Option<StreamPosition>, NotifyError> {
        let topic = match audience {
            Audience::User(uid) => Some(user_topic(uid.as_str())),
            Audience::Topic(t) => Some(t.clone()),
            Audience::Everyone => None,
        };
        if let Some(topic) = topic
            && let Some((options, history)) = self.hub.recording(&topic)
        {
            let message = self.hub.fanout_message(audience, notification.clone());
            return match history.publish_recorded(&topic, &message, &options).await {
                Ok(position) => {
                    if self.hub.fanout().is_none() {
                        // No fan-out hands it back: deliver it here.
                        self.hub.deliver_recorded(&topic, &position, notification);
                    }
                    Ok(Some(position))
                }
                Err(e) => {
                    // Those connected here still get it, without a place in
                    // the history (they recover around it later).
                    self.hub.deliver_local(audience, notification);
                    Err(fanout_error(e))
                }
            };
        }
        self.hub.deliver_local(audience, notification);
        self.publish(self.hub.fanout_message(audience, notification.clone()))
            .await?;
        Ok(None)
    }

    /// A socket of `uid` acknowledged `delivery`.
    pub(crate) async fn ack(&self, uid: &FirebaseUid, delivery: &str) {
        let key = ack_key(uid, delivery);
        self.hub.acked(&key);
        let mut message = self.hub.fanout_message(
            &Audience::Topic("$acks".into()),
            Notification::new("ack", serde_json::Value::Null),
        );
        message.acked = Some(key);
        if let Err(e) = self.publish(message).await {
            tracing::debug!(error = %e, "ack not fanned out");
        }
    }
}

/// Acks are matched by user and delivery id: a user cannot acknowledge
/// another's delivery.
fn ack_key(uid: &FirebaseUid, delivery: &str) -> String {
    format!("{} {delivery}", uid.as_str())
}

#[async_trait]
impl Notifier for HubNotifier {
    async fn notify(
        &self,
        audience: &Audience,
        notification: &Notification,
    ) -> Result<(), NotifyError> {
        self.send(audience, notification).await.map(|_| ())
    }

    async fn disconnect(
        &self,
        audience: &Audience,
        reason: &Disconnect,
    ) -> Result<(), NotifyError> {
        self.hub.disconnect_local(audience, reason);
        let mut message = self.hub.fanout_message(audience, disconnect_notice(reason));
        message.disconnect = Some(reason.clone());
        self.publish(message).await
    }

    async fn forget_user(&self, uid: &FirebaseUid) -> Result<(), NotifyError> {
        match self.hub.history() {
            Some(history) => history
                .forget(&user_topic(uid.as_str()))
                .await
                .map_err(fanout_error),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Realtime for HubNotifier {
    async fn publish(
        &self,
        topic: &str,
        notification: &Notification,
    ) -> Result<Option<StreamPosition>, NotifyError> {
        self.send(&Audience::Topic(topic.to_owned()), notification)
            .await
    }

    async fn presence(&self, topic: &str) -> Result<Vec<PresenceEntry>, NotifyError> {
        match self.hub.presence_store() {
            Some(store) => store.present(topic).await.map_err(fanout_error),
            None => Ok(Vec::new()),
        }
    }

    async fn deliver(
        &self,
        uid: &FirebaseUid,
        delivery: &str,
        notification: &Notification,
        wait: Duration,
    ) -> Result<SocketDelivery, NotifyError> {
        let online = match self.hub.socket_registry() {
            Some(registry) => match registry.sockets(uid.as_str()).await {
                Ok(sockets) => sockets.iter().any(|(_, n)| *n > 0),
                // Not knowing, try the sockets: the wait decides.
                Err(_) => true,
            },
            None => self.hub.local_sockets(uid) > 0,
        };
        if !online {
            return Ok(SocketDelivery::Offline);
        }
        let key = ack_key(uid, delivery);
        let acked = self.hub.await_ack(key.clone());
        let mut marked = notification.clone();
        marked.delivery = Some(delivery.to_owned());
        let sent = Instant::now();
        if let Err(e) = self.send(&Audience::User(uid.clone()), &marked).await {
            self.hub.forget_ack(&key);
            return Err(e);
        }
        let outcome = match tokio::time::timeout(wait, acked).await {
            Ok(Ok(())) => SocketDelivery::Acked(sent.elapsed()),
            Ok(Err(_)) | Err(_) => SocketDelivery::Unacknowledged,
        };
        self.hub.forget_ack(&key);
        Ok(outcome)
    }
}

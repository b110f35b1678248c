//! How messages reach connections: each connection's bounded send queue,
//! replies that wait for room, deliveries here and from the fan-out (in
//! offset order on recoverable topics), acks, and the slow client dropped.

use super::registry::Kick;
use super::subscriptions::Admit;
use super::{ConnId, Hub, read, user_topic, write};
use crate::envelope;
use crate::send_queue::TrySendError;
use bytestring::ByteString;
use ports::{
    Audience, Disconnect, FanoutError, FanoutMessage, FanoutSink, Notification, StreamPosition,
};
use std::collections::HashMap;

/// Why a send to one connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendOutcome {
    Queued,
    /// Its queue was full: the connection was dropped.
    Kicked,
    Gone,
}

/// The notice a socket gets just before the server closes it.
pub(crate) fn disconnect_notice(reason: &Disconnect) -> Notification {
    Notification::new(
        crate::DISCONNECT_TYPE,
        serde_json::json!({"code": reason.code, "reason": reason.reason}),
    )
}

impl Hub {
    /// Queues `text` for one connection (what every reply and notification
    /// goes through), without waiting. A full queue means
    /// the client does not keep up: it is disconnected rather than buffered.
    pub(crate) fn send_to(&self, id: ConnId, text: ByteString) -> SendOutcome {
        let Some(tx) = read(&self.inner.registry)
            .conns
            .get(&id)
            .map(|c| c.tx.clone())
        else {
            return SendOutcome::Gone;
        };
        match tx.try_send(text) {
            Ok(()) => SendOutcome::Queued,
            Err((TrySendError::Full, _)) => {
                self.kick_slow(id);
                SendOutcome::Kicked
            }
            Err((TrySendError::Closed, _)) => SendOutcome::Gone,
        }
    }

    /// Queues a reply to the connection's own request, waiting for room: a
    /// client that sends requests gets backpressure (we stop reading it)
    /// rather than a disconnect. Only a client that does not drain its queue
    /// for `idle_timeout` is dropped.
    pub(crate) async fn reply_to(&self, id: ConnId, kind: &str, text: ByteString) -> SendOutcome {
        let (tx, kick) = {
            let reg = read(&self.inner.registry);
            match reg.conns.get(&id) {
                Some(c) => (c.tx.clone(), c.kick.token.clone()),
                None => return SendOutcome::Gone,
            }
        };
        tokio::select! {
            sent = tokio::time::timeout(self.inner.settings.idle_timeout, tx.send(text)) => match sent {
                Ok(Ok(())) => {
                    metrics::counter!("ws_messages_out_total", "type" => kind.to_owned()).increment(1);
                    SendOutcome::Queued
                }
                Ok(Err(_)) => SendOutcome::Gone,
                Err(_) => {
                    metrics::counter!("ws_slow_client_disconnects_total").increment(1);
                    tracing::warn!(conn = id, "client has not drained its replies; disconnecting it");
                    self.unregister(id);
                    kick.cancel();
                    SendOutcome::Kicked
                }
            },
            () = kick.cancelled() => SendOutcome::Gone,
        }
    }

    /// Delivers to the sockets on this instance. Returns how many got it.
    pub fn deliver_local(&self, audience: &Audience, notification: &Notification) -> usize {
        let topic = match audience {
            Audience::Topic(t) => Some(t.as_str()),
            Audience::User(_) | Audience::Everyone => None,
        };
        let text = ByteString::from(envelope::render_message(notification, topic, None));
        self.deliver_text(audience, &notification.kind, text)
    }

    /// Delivers a recorded message of `topic` to its subscribers here, in
    /// offset order: held back while a subscription recovers, dropped if
    /// it was already sent, and a subscription that missed one (the
    /// fan-out lost it) is told to resubscribe. Returns how many got it.
    pub fn deliver_recorded(
        &self,
        topic: &str,
        position: &StreamPosition,
        notification: &Notification,
    ) -> usize {
        let text = ByteString::from(envelope::render_message(
            notification,
            Some(topic),
            Some(position),
        ));
        let max_pending = self.inner.settings.max_pending;
        let mut delivered = 0;
        let mut resync = Vec::new();
        let mut kicked = Vec::new();
        {
            let mut guard = write(&self.inner.registry);
            let reg = &mut *guard;
            let Some(subs) = reg.by_topic.get_mut(topic) else {
                return 0;
            };
            for (id, sub) in subs.iter_mut() {
                if let Some(pending) = &mut sub.pending {
                    if pending.len() < max_pending {
                        pending.push((position.clone(), text.clone()));
                    } else {
                        resync.push(*id);
                    }
                    continue;
                }
                match sub.admit(position) {
                    Admit::Deliver => {}
                    Admit::Duplicate => continue,
                    Admit::Gap => {
                        resync.push(*id);
                        continue;
                    }
                }
                let Some(conn) = reg.conns.get(id) else {
                    continue;
                };
                match conn.tx.try_send(text.clone()) {
                    Ok(()) => delivered += 1,
                    Err((TrySendError::Full, _)) => kicked.push(*id),
                    Err((TrySendError::Closed, _)) => {}
                }
            }
        }
        for id in resync {
            self.lost(id, topic);
        }
        for id in kicked {
            self.kick_slow(id);
        }
        if delivered > 0 {
            metrics::counter!("ws_messages_out_total", "type" => notification.kind.clone())
                .increment(delivered as u64);
        }
        delivered
    }

    /// Drops a connection whose queue is full.
    pub(super) fn kick_slow(&self, id: ConnId) {
        let kick = read(&self.inner.registry)
            .conns
            .get(&id)
            .map(|c| c.kick.token.clone());
        if let Some(kick) = kick {
            metrics::counter!("ws_slow_client_disconnects_total").increment(1);
            tracing::warn!(
                conn = id,
                "client too slow to drain its queue; disconnecting it"
            );
            self.unregister(id);
            kick.cancel();
        }
    }

    /// Closes the sockets on this instance that `audience` covers, with
    /// `reason` (after a `disconnect` notice, queued behind what they have
    /// not been sent yet). Returns how many.
    pub fn disconnect_local(&self, audience: &Audience, reason: &Disconnect) -> usize {
        let notice = disconnect_notice(reason);
        self.deliver_local(audience, &notice);
        let kicks: Vec<Kick> = {
            let reg = read(&self.inner.registry);
            self.targets(audience)
                .iter()
                .filter_map(|id| reg.conns.get(id).map(|c| c.kick.clone()))
                .collect()
        };
        for kick in &kicks {
            kick.with(reason);
        }
        if !kicks.is_empty() {
            metrics::counter!("ws_disconnects_total", "code" => reason.code.to_string())
                .increment(kicks.len() as u64);
            tracing::info!(sockets = kicks.len(), code = reason.code, reason = %reason.reason, "closing sockets");
        }
        kicks.len()
    }

    fn deliver_text(&self, audience: &Audience, kind: &str, text: ByteString) -> usize {
        let mut delivered = 0;
        for id in self.targets(audience) {
            if self.send_to(id, text.clone()) == SendOutcome::Queued {
                delivered += 1;
            }
        }
        if delivered > 0 {
            metrics::counter!("ws_messages_out_total", "type" => kind.to_owned())
                .increment(delivered as u64);
        }
        delivered
    }

    /// `notification` as the fan-out carries it from this instance.
    pub(crate) fn fanout_message(
        &self,
        audience: &Audience,
        notification: Notification,
    ) -> FanoutMessage {
        FanoutMessage {
            origin: self.settings().instance_id.clone(),
            audience: audience.clone(),
            notification,
            disconnect: None,
            position: None,
            acked: None,
        }
    }

    /// Publishes `message` to the other instances through the fan-out;
    /// nothing to do without one (a single instance).
    pub(crate) async fn fan_out(&self, message: &FanoutMessage) -> Result<(), FanoutError> {
        match self.fanout() {
            Some(fanout) => fanout.publish(message).await,
            None => Ok(()),
        }
    }

    /// Delivers to the sockets here and publishes to the other instances
    /// (without a place in any history): best effort, a failure is logged.
    pub(crate) async fn announce(&self, audience: &Audience, notification: Notification) {
        self.deliver_local(audience, &notification);
        let message = self.fanout_message(audience, notification);
        if let Err(e) = self.fan_out(&message).await {
            tracing::debug!(error = %e, "notice not fanned out");
        }
    }

    /// Waits for `<uid> <delivery>` to be acknowledged (see `acked`).
    pub(crate) fn await_ack(&self, key: String) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.acks().insert(key, tx);
        rx
    }

    pub(crate) fn forget_ack(&self, key: &str) {
        self.acks().remove(key);
    }

    /// A socket acknowledged `<uid> <delivery>`: its waiter, if on this
    /// instance, stops waiting.
    pub(crate) fn acked(&self, key: &str) {
        if let Some(tx) = self.acks().remove(key) {
            let _ = tx.send(());
        }
    }

    fn acks(&self) -> std::sync::MutexGuard<'_, HashMap<String, tokio::sync::oneshot::Sender<()>>> {
        self.inner
            .acks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl FanoutSink for Hub {
    fn deliver(&self, message: FanoutMessage) {
        if let Some(key) = &message.acked {
            return self.acked(key);
        }
        if let Some(position) = &message.position {
            // Recorded messages are delivered from here on every instance,
            // the publisher's included, so each sees one order.
            let topic = match &message.audience {
                Audience::Topic(t) => t.clone(),
                Audience::User(uid) => user_topic(uid.as_str()),
                Audience::Everyone => return,
            };
            self.deliver_recorded(&topic, position, &message.notification);
            return;
        }
        if message.origin == self.inner.settings.instance_id {
            return; // delivered locally when it was published
        }
        match &message.disconnect {
            Some(reason) => {
                self.disconnect_local(&message.audience, reason);
            }
            None => {
                self.deliver_local(&message.audience, &message.notification);
            }
        }
    }
}

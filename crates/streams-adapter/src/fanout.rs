//! `RedisFanout`: realtime notifications between instances over Redis pub/sub.
//!
//! Every instance publishes to one channel (`<prefix>fanout`) and subscribes to
//! it; each hands what it receives to its local hub (the `FanoutSink`). The
//! subscriber connection is separate (a subscribed connection can do nothing
//! else) and resubscribes by itself after a reconnect.

use crate::reply::{command, v};
use async_trait::async_trait;
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike as _, EventInterface as _, PubsubInterface as _};
use fred::prelude::{Builder, ReconnectPolicy};
use ports::{Fanout, FanoutError, FanoutMessage, FanoutSink};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long `subscribe` waits for the first subscription before it
/// returns anyway (Redis down at startup must not stop the process).
const FIRST_SUBSCRIBE_WAIT: Duration = Duration::from_secs(3);

/// Messages buffered between Redis and the local hub.
const FANOUT_BUFFER: usize = 8192;

pub struct RedisFanout {
    publisher: Client,
    subscriber: SubscriberClient,
    channel: String,
    prefix: String,
}

impl std::fmt::Debug for RedisFanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisFanout")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl RedisFanout {
    /// Publishes through `base`; subscribes on a new connection configured like it.
    pub fn new(base: &Client, prefix: &str) -> anyhow::Result<Self> {
        let connection = base.connection_config().clone();
        let subscriber = Builder::from_config(base.client_config())
            .with_connection_config(|c| *c = connection)
            // fred hands messages over through a broadcast channel: a burst
            // longer than it would drop messages (counted and logged).
            .with_performance_config(|p| p.broadcast_channel_capacity = FANOUT_BUFFER)
            .set_policy(
                base.client_reconnect_policy()
                    .unwrap_or_else(|| ReconnectPolicy::new_exponential(0, 100, 5_000, 2)),
            )
            .build_subscriber_client()?;
        Ok(Self {
            publisher: base.clone(),
            subscriber,
            channel: format!("{prefix}fanout"),
            prefix: prefix.to_owned(),
        })
    }
}

impl RedisFanout {
    /// The name of the subscribing connection (`CLIENT LIST`).
    pub fn subscriber_name(&self) -> &str {
        self.subscriber.id()
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }

    pub(crate) fn publisher(&self) -> &Client {
        &self.publisher
    }
}

#[async_trait]
impl Fanout for RedisFanout {
    async fn publish(&self, message: &FanoutMessage) -> Result<(), FanoutError> {
        let json = serde_json::to_string(message).map_err(|e| FanoutError::Unknown(e.into()))?;
        command(
            &self.publisher,
            "PUBLISH",
            false,
            vec![v(&*self.channel), v(json)],
        )
        .await
        .map_err(|e| FanoutError::Unavailable(anyhow::anyhow!("redis: {e}")))?;
        Ok(())
    }

    async fn subscribe(
        &self,
        sink: Arc<dyn FanoutSink>,
        stop: CancellationToken,
    ) -> Result<(), FanoutError> {
        let subscriber = self.subscriber.clone();
        let channel = self.channel.clone();
        let mut messages = subscriber.message_rx();
        // Each reconnect resubscribes (`manage_subscriptions`); what was
        // published meanwhile is recovered from the topics' history when
        // sockets resubscribe from their last offset.
        crate::client::say_reconnects(&subscriber, "realtime fan-out subscriber");
        subscriber.connect();
        let _resubscriber = subscriber.manage_subscriptions();
        // Subscribe in the background, retrying until Redis answers, so an
        // instance that starts during a Redis outage still joins later; the
        // caller waits for the first subscription (a bounded while), so what
        // is published once it returns reaches this instance.
        let sub = subscriber.clone();
        let ch = channel.clone();
        let stopped = stop.clone();
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(100);
            let mut said = false;
            loop {
                match sub.subscribe(ch.as_str()).await {
                    Ok(()) => {
                        tracing::info!(channel = %ch, "subscribed to realtime fan-out");
                        let _ = subscribed_tx.send(());
                        return;
                    }
                    Err(e) => {
                        // Said once; the attempts go on with backoff.
                        if !said {
                            said = true;
                            tracing::warn!(error = %e, "cannot subscribe to realtime fan-out yet; retrying with backoff up to 5 s");
                        }
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = stopped.cancelled() => return,
                        }
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
        tokio::spawn(async move {
            loop {
                let received = tokio::select! {
                    r = messages.recv() => r,
                    () = stop.cancelled() => return,
                };
                match received {
                    Ok(m) if *m.channel == *channel => {
                        let Some(text) = m.value.as_string() else {
                            continue;
                        };
                        match decode(&text) {
                            Ok(msg) => sink.deliver(msg),
                            Err(e) => {
                                tracing::warn!(error = %e, "ignoring a fan-out message that does not decode")
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        metrics::counter!("fanout_messages_dropped_total").increment(n);
                        tracing::warn!(
                            dropped = n,
                            "fan-out receiver fell behind; messages dropped"
                        );
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        if tokio::time::timeout(FIRST_SUBSCRIBE_WAIT, subscribed)
            .await
            .is_err()
        {
            tracing::warn!("realtime fan-out not subscribed yet; going on while it retries");
        }
        Ok(())
    }
}

/// What the fan-out channel carries for a recorded message.
#[derive(serde::Deserialize)]
pub(crate) struct Recorded {
    offset: u64,
    epoch: String,
    message: FanoutMessage,
}

/// Decodes a fan-out payload, recorded or not.
pub(crate) fn decode(text: &str) -> Result<FanoutMessage, serde_json::Error> {
    if text.starts_with("{\"offset\":") {
        let r: Recorded = serde_json::from_str(text)?;
        let mut message = r.message;
        message.position = Some(ports::StreamPosition {
            offset: r.offset,
            epoch: r.epoch,
        });
        Ok(message)
    } else {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_messages_decode_with_their_position() {
        let m = decode(
            r#"{"offset":7,"epoch":"ab","message":{"origin":"i","audience":{"kind":"topic","value":"t"},"notification":{"type":"x","data":1}}}"#,
        )
        .unwrap();
        assert_eq!(
            m.position,
            Some(ports::StreamPosition {
                offset: 7,
                epoch: "ab".into()
            })
        );
        let plain = decode(
            r#"{"origin":"i","audience":{"kind":"everyone"},"notification":{"type":"x","data":1}}"#,
        )
        .unwrap();
        assert_eq!(plain.position, None);
    }
}

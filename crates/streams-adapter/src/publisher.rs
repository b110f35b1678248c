//! `RedisStreamPublisher`: domain events onto Redis Streams.

use crate::reply::{command, v};
use crate::wire::{self, EVENT_FIELD, TYPE_FIELD};
use async_trait::async_trait;
use domain::RawEvent;
use fred::clients::Client;
use ports::{EventPublisher, PublishEventError};

/// The stream key for a topic on one Redis: `<prefix>stream:<topic>`.
pub fn stream_key(prefix: &str, topic: &str) -> String {
    format!("{prefix}stream:{topic}")
}

/// The stream key for a topic on a Redis Cluster: `{<prefix>stream:<topic>}`,
/// a hash tag, so the stream, its dead letters (`<stream>:dead`) and its
/// groups' processed-event marks share one slot (a script and an `MGET`
/// touch several of them), while different topics spread over the nodes.
pub fn cluster_stream_key(prefix: &str, topic: &str) -> String {
    format!("{{{prefix}stream:{topic}}}")
}

/// The stream key for a topic on the kind of Redis `client` talks to.
pub(crate) fn stream_key_for(client: &Client, prefix: &str, topic: &str) -> String {
    if fred::interfaces::ClientLike::is_clustered(client) {
        cluster_stream_key(prefix, topic)
    } else {
        stream_key(prefix, topic)
    }
}

/// Publishes with `XADD <stream> * type <t> event <json>`. Nothing is
/// trimmed here: an entry goes only once every consumer group has
/// acknowledged it (the consumers trim, see `ConsumerSettings::max_len`).
#[derive(Clone)]
pub struct RedisStreamPublisher {
    client: Client,
    prefix: String,
}

impl std::fmt::Debug for RedisStreamPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreamPublisher")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStreamPublisher {
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        Self {
            client,
            prefix: prefix.into(),
        }
    }
}

pub(crate) fn classify(e: fred::error::Error) -> anyhow::Error {
    anyhow::anyhow!("redis: {e}")
}

#[async_trait]
impl EventPublisher for RedisStreamPublisher {
    async fn publish(&self, event: &RawEvent) -> Result<String, PublishEventError> {
        let key = stream_key_for(&self.client, &self.prefix, &event.topic);
        let args = vec![
            v(key),
            v("*"),
            v(TYPE_FIELD),
            v(&*event.event_type),
            v(EVENT_FIELD),
            v(wire::encode(event)),
        ];
        let reply = command(&self.client, "XADD", false, args)
            .await
            .map_err(|e| PublishEventError::Unavailable(classify(e)))?;
        // Known types only as label values: the set stays bounded.
        let kind = if domain::DomainEvent::is_known_type(&event.event_type) {
            event.event_type.clone()
        } else {
            "unknown".to_owned()
        };
        metrics::counter!("events_published_total", "type" => kind).increment(1);
        reply
            .as_string()
            .ok_or_else(|| PublishEventError::Unknown(anyhow::anyhow!("XADD returned no id")))
    }
}

//! `RedisStreamPublisher`: domain events onto Redis Streams.

use crate::reply::{command, v};
use crate::wire::{self, EVENT_FIELD, TYPE_FIELD};
use async_trait::async_trait;
use domain::EventEnvelope;
use fred::clients::Client;
use fred::prelude::Value;
use ports::{EventPublisher, PublishEventError};

/// The stream key for a topic: `<prefix>stream:<topic>`.
pub fn stream_key(prefix: &str, topic: &str) -> String {
    format!("{prefix}stream:{topic}")
}

/// Publishes with `XADD <stream> MAXLEN ~ <max_len> * type <t> event <json>`.
#[derive(Clone)]
pub struct RedisStreamPublisher {
    client: Client,
    prefix: String,
    max_len: u64,
}

impl std::fmt::Debug for RedisStreamPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreamPublisher")
            .field("prefix", &self.prefix)
            .field("max_len", &self.max_len)
            .finish_non_exhaustive()
    }
}

impl RedisStreamPublisher {
    /// `max_len` bounds each stream (approximately: trimming is `~`, cheap).
    /// Keep it well above what consumers can lag behind by.
    pub fn new(client: Client, prefix: impl Into<String>, max_len: u64) -> Self {
        Self {
            client,
            prefix: prefix.into(),
            max_len,
        }
    }
}

pub(crate) fn classify(e: fred::error::Error) -> anyhow::Error {
    anyhow::anyhow!("redis: {e}")
}

#[async_trait]
impl EventPublisher for RedisStreamPublisher {
    async fn publish(&self, event: &EventEnvelope) -> Result<String, PublishEventError> {
        let key = stream_key(&self.prefix, event.event.topic());
        let args = vec![
            v(key),
            v("MAXLEN"),
            v("~"),
            Value::Integer(i64::try_from(self.max_len).unwrap_or(i64::MAX)),
            v("*"),
            v(TYPE_FIELD),
            v(event.event.event_type()),
            v(EVENT_FIELD),
            v(wire::encode(event)),
        ];
        let reply = command(&self.client, "XADD", false, args)
            .await
            .map_err(|e| PublishEventError::Unavailable(classify(e)))?;
        metrics::counter!("events_published_total", "type" => event.event.event_type())
            .increment(1);
        reply
            .as_string()
            .ok_or_else(|| PublishEventError::Unknown(anyhow::anyhow!("XADD returned no id")))
    }
}

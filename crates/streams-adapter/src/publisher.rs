//! `RedisStreamPublisher`: domain events onto Redis Streams.

use crate::reply::{command, v};
use crate::wire::{self, EVENT_FIELD, TYPE_FIELD};
use async_trait::async_trait;
use domain::RawEvent;
use fred::clients::Client;
use fred::interfaces::{ClientInterface as _, ClientLike as _};
use fred::prelude::Value;
use ports::durability::{KnownReplicas, ReplicaWait, check_acks, connected_replicas};
use ports::{EventPublisher, LeaderTerm, PublishEventError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

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

/// The relay leader's append: refused once a later term has published to
/// the stream, and raises the stream's fence to this term in the same
/// step. KEYS: stream, fence. ARGV: term, type, event.
const FENCED_XADD: &str = r"
local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
local term = tonumber(ARGV[1])
if fence > term then
  return redis.error_reply('FENCED ' .. string.format('%.0f', fence))
end
if fence < term then
  redis.call('SET', KEYS[2], ARGV[1])
end
return redis.call('XADD', KEYS[1], '*', 'type', ARGV[2], 'event', ARGV[3])
";

/// Publishes with `XADD <stream> * type <t> event <json>`. Nothing is
/// trimmed here: an entry goes only once every consumer group has
/// acknowledged it (the consumers trim, see `ConsumerSettings::max_len`).
///
/// The relay's appends are fenced by its term (`<stream>:fence` holds the
/// latest term that appended) and confirmed with `WAIT` when the primary
/// has replicas (`ReplicaWait`).
#[derive(Clone)]
pub struct RedisStreamPublisher {
    client: Client,
    prefix: String,
    durability: Arc<Durability>,
}

/// What `confirm` needs: the policy, the replica count last read, and the
/// connection the unconfirmed appends went out on.
#[derive(Debug, Default)]
struct Durability {
    wait: ReplicaWait,
    replicas: KnownReplicas,
    /// `CLIENT ID` of each connection when the first append since the last
    /// confirmation was sent: a `WAIT` on another connection proves
    /// nothing about them.
    unconfirmed_since: Mutex<Option<HashMap<String, i64>>>,
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
            durability: Arc::default(),
        }
    }

    /// Waits for replicas as `wait` says before `confirm` returns (the
    /// default: one replica whenever the primary has one connected).
    #[must_use]
    pub fn with_replica_wait(mut self, wait: ReplicaWait) -> Self {
        self.durability = Arc::new(Durability {
            wait,
            ..Durability::default()
        });
        self
    }

    fn connection_ids(&self) -> HashMap<String, i64> {
        self.client
            .connection_ids()
            .into_iter()
            .map(|(server, id)| (server.to_string(), id))
            .collect()
    }

    fn note_unconfirmed(&self) {
        let mut since = self
            .durability
            .unconfirmed_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if since.is_none() {
            *since = Some(self.connection_ids());
        }
    }

    /// How many replicas `confirm` waits for: the policy applied to the
    /// primary's connected replicas (read now and then).
    async fn required_replicas(&self) -> Result<u32, PublishEventError> {
        let d = &self.durability;
        if d.wait.is_off() {
            return Ok(0);
        }
        if let Some(n) = d.replicas.fresh() {
            return Ok(d.wait.required(n));
        }
        let info = command(&self.client, "INFO", false, vec![v("replication")])
            .await
            .map_err(|e| PublishEventError::Unavailable(classify(e)))?;
        let n = info
            .as_string()
            .as_deref()
            .and_then(connected_replicas)
            .unwrap_or(0);
        d.replicas.set(n);
        Ok(d.wait.required(n))
    }
}

pub(crate) fn classify(e: fred::error::Error) -> anyhow::Error {
    anyhow::anyhow!("redis: {e}")
}

/// `FENCED <term>` from the script.
fn fenced_by(e: &fred::error::Error) -> Option<LeaderTerm> {
    e.details()
        .split_once("FENCED ")
        .and_then(|(_, t)| t.split_whitespace().next()?.parse().ok())
        .map(LeaderTerm)
}

impl RedisStreamPublisher {
    fn appended(&self, event: &RawEvent, reply: &Value) -> Result<String, PublishEventError> {
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
        self.note_unconfirmed();
        let reply = command(&self.client, "XADD", false, args)
            .await
            .map_err(|e| PublishEventError::Unavailable(classify(e)))?;
        self.appended(event, &reply)
    }

    async fn publish_as_leader(
        &self,
        event: &RawEvent,
        term: LeaderTerm,
    ) -> Result<String, PublishEventError> {
        let key = stream_key_for(&self.client, &self.prefix, &event.topic);
        let fence = format!("{key}:fence");
        let args = vec![
            v(FENCED_XADD),
            Value::Integer(2),
            v(key),
            v(fence),
            v(term.0.to_string()),
            v(&*event.event_type),
            v(wire::encode(event)),
        ];
        self.note_unconfirmed();
        let reply =
            command(&self.client, "EVAL", false, args)
                .await
                .map_err(|e| match fenced_by(&e) {
                    Some(by) => PublishEventError::Fenced { by },
                    None => PublishEventError::Unavailable(classify(e)),
                })?;
        self.appended(event, &reply)
    }

    async fn confirm(&self) -> Result<(), PublishEventError> {
        let d = &self.durability;
        let Some(since) = d
            .unconfirmed_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return Ok(());
        };
        // A cluster's streams live on several primaries; WAIT is not sent
        // there (see the README's production checklist).
        if self.client.is_clustered() {
            return Ok(());
        }
        let required = self.required_replicas().await?;
        if required == 0 {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let reply = command(
            &self.client,
            "WAIT",
            false,
            vec![
                Value::Integer(i64::from(required)),
                Value::Integer(i64::try_from(d.wait.timeout_ms()).unwrap_or(i64::MAX)),
            ],
        )
        .await
        .map_err(|e| PublishEventError::Unavailable(classify(e)))?;
        metrics::histogram!("redis_replica_wait_seconds", "write" => "publish")
            .record(started.elapsed().as_secs_f64());
        let acked = reply
            .as_u64()
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX));
        // The WAIT covers the appends only if they went out on the same
        // connection: a reconnect in between (a failover) leaves them
        // unknown, so they are published again. A server that refuses
        // `CLIENT ID` leaves fred no ids to compare: then the WAIT is
        // trusted as it is (refusing every batch would stall the relay and
        // publish each batch again and again).
        let now = self.connection_ids();
        if now != since && !(since.is_empty() && now.is_empty()) {
            d.replicas.forget();
            return Err(PublishEventError::Unavailable(anyhow::anyhow!(
                "the connection to Redis changed while waiting for replicas; publishing again"
            )));
        }
        check_acks(&d.wait, required, acked).map_err(|e| {
            d.replicas.forget();
            metrics::counter!("redis_replica_wait_shortfalls_total", "write" => "publish")
                .increment(1);
            PublishEventError::Unavailable(e.into())
        })
    }
}

//! `StreamAdmin`: the dead letters of a stream, and replaying them (what
//! `app events dead` and `app events replay` do).
//!
//! A dead letter carries the original entry's fields (`type`, `event`) plus
//! why it died (`reason`), which group gave up on it (`group`), after how
//! many deliveries, and its original id. Replaying appends the original
//! fields to the stream again (so every group sees it; groups that handled
//! it before skip it by its event id) and deletes the dead letter, in one
//! script, so an entry is never both replayed and still dead, nor lost.

use crate::publisher::stream_key_for;
use crate::reply::{self, Entry, command, v};
use fred::clients::Client;
use fred::prelude::Value;

pub use ports::admin::DeadLetter;

/// A dead letter as the consumer stored it.
fn dead_letter(e: &Entry) -> DeadLetter {
    let f = |name: &str| e.field(name).unwrap_or_default().to_owned();
    DeadLetter {
        id: e.id.clone(),
        original_id: f("original_id"),
        group: f("group"),
        reason: f("reason"),
        deliveries: f("deliveries").parse().unwrap_or(0),
        event_type: f(crate::wire::TYPE_FIELD),
        event: f(crate::wire::EVENT_FIELD),
    }
}

/// KEYS: dead-letter stream, stream. ARGV: dead letter id. Moves the entry's
/// original fields back to the stream and deletes the dead letter. Returns
/// the new entry's id, or false when there is no such dead letter.
const REPLAY: &str = r"
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return false end
local fields = found[1][2]
local out = {}
for i = 1, #fields, 2 do
  local k = fields[i]
  if k ~= 'original_id' and k ~= 'group' and k ~= 'consumer' and k ~= 'reason' and k ~= 'deliveries' then
    table.insert(out, k)
    table.insert(out, fields[i + 1])
  end
end
local id = redis.call('XADD', KEYS[2], '*', unpack(out))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
";

/// Dead letters of the event streams under one key prefix.
#[derive(Clone)]
pub struct StreamAdmin {
    client: Client,
    prefix: String,
}

impl std::fmt::Debug for StreamAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamAdmin")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The most dead letters one replay-all moves.
const REPLAY_ALL_MAX: usize = 100_000;

impl StreamAdmin {
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        Self {
            client,
            prefix: prefix.into(),
        }
    }

    fn keys(&self, topic: &str) -> (String, String) {
        let stream = stream_key_for(&self.client, &self.prefix, topic);
        (format!("{stream}:dead"), stream)
    }

    /// The newest `limit` dead letters of `topic`'s stream, newest first.
    pub async fn dead_letters(&self, topic: &str, limit: usize) -> anyhow::Result<Vec<DeadLetter>> {
        let (dead, _) = self.keys(topic);
        let args = vec![
            v(dead),
            v("+"),
            v("-"),
            v("COUNT"),
            Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)),
        ];
        let reply = command(&self.client, "XREVRANGE", false, args)
            .await
            .map_err(|e| anyhow::anyhow!("redis: {e}"))?;
        Ok(reply::entries(reply).iter().map(dead_letter).collect())
    }

    /// Puts one dead letter back on its stream. Returns the new entry's id,
    /// or `None` when there is no dead letter with that id.
    pub async fn replay(&self, topic: &str, id: &str) -> anyhow::Result<Option<String>> {
        let (dead, stream) = self.keys(topic);
        let args = vec![v(REPLAY), Value::Integer(2), v(dead), v(stream), v(id)];
        let reply = command(&self.client, "EVAL", false, args)
            .await
            .map_err(|e| anyhow::anyhow!("redis: {e}"))?;
        Ok(match reply {
            Value::Null | Value::Boolean(false) => None,
            other => other.as_string(),
        })
    }

    /// Puts every dead letter of `topic` back, oldest first. Returns how many.
    pub async fn replay_all(&self, topic: &str) -> anyhow::Result<usize> {
        let mut replayed = 0;
        while replayed < REPLAY_ALL_MAX {
            let (dead, _) = self.keys(topic);
            let args = vec![v(dead), v("-"), v("+"), v("COUNT"), Value::Integer(100)];
            let batch = reply::entries(
                command(&self.client, "XRANGE", false, args)
                    .await
                    .map_err(|e| anyhow::anyhow!("redis: {e}"))?,
            );
            if batch.is_empty() {
                break;
            }
            for e in batch {
                if self.replay(topic, &e.id).await?.is_some() {
                    replayed += 1;
                }
            }
        }
        Ok(replayed)
    }
}

/// An admin failure: Redis did not answer as it should (retry later).
fn unavailable(e: anyhow::Error) -> ports::AdminError {
    ports::AdminError::Unavailable(e)
}

#[async_trait::async_trait]
impl ports::EventAdmin for StreamAdmin {
    async fn overview(&self, topic: &str) -> Result<ports::StreamOverview, ports::AdminError> {
        let (dead, stream) = self.keys(topic);
        let fail = |e: fred::error::Error| unavailable(anyhow::anyhow!("redis: {e}"));
        let length = command(&self.client, "XLEN", false, vec![v(stream.clone())])
            .await
            .map_err(fail)?
            .as_u64()
            .unwrap_or(0);
        let dead_letters = command(&self.client, "XLEN", false, vec![v(dead)])
            .await
            .map_err(fail)?
            .as_u64()
            .unwrap_or(0);
        // A stream that does not exist yet has no groups (XINFO refuses it).
        let groups = command(&self.client, "XINFO", false, vec![v("GROUPS"), v(stream)])
            .await
            .map(reply::xinfo_groups)
            .unwrap_or_default();
        Ok(ports::StreamOverview {
            topic: topic.to_owned(),
            length,
            dead_letters,
            groups,
        })
    }

    async fn dead_letters(
        &self,
        topic: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, ports::AdminError> {
        StreamAdmin::dead_letters(self, topic, limit)
            .await
            .map_err(unavailable)
    }

    async fn replay(&self, topic: &str, id: &str) -> Result<bool, ports::AdminError> {
        Ok(StreamAdmin::replay(self, topic, id)
            .await
            .map_err(unavailable)?
            .is_some())
    }

    async fn replay_all(&self, topic: &str) -> Result<usize, ports::AdminError> {
        StreamAdmin::replay_all(self, topic)
            .await
            .map_err(unavailable)
    }
}

//! Presence (`ports::PresenceStore`) on Redis: per topic, `{<prefix>rt:<topic>}:pz`
//! (a sorted set: each client's expiry) and `:ph` (a hash: each client's uid),
//! beside the topic's history (`history.rs`).

use crate::history::{millis, topic_key, unavailable};
use crate::reply::{command, v};
use async_trait::async_trait;
use fred::clients::Client;
use fred::prelude::Value;
use ports::{FanoutError, PresenceEntry, PresenceStore};
use std::time::Duration;

/// KEYS: expiries, uids. ARGV: client, uid, ttl ms.
const JOIN: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
";

/// KEYS: expiries, uids. Drops expired entries, returns the rest.
const PRESENT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, c in ipairs(gone) do
  redis.call('ZREM', KEYS[1], c)
  redis.call('HDEL', KEYS[2], c)
end
return redis.call('HGETALL', KEYS[2])
";

/// Presence on Redis: see the module's doc for the keys.
#[derive(Clone)]
pub struct RedisPresence {
    client: Client,
    prefix: String,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisPresence {
    pub fn new(client: Client, prefix: &str) -> Self {
        Self {
            client,
            prefix: prefix.to_owned(),
        }
    }

    fn keys(&self, topic: &str) -> (String, String) {
        (
            topic_key(&self.prefix, topic, "pz"),
            topic_key(&self.prefix, topic, "ph"),
        )
    }
}

#[async_trait]
impl PresenceStore for RedisPresence {
    async fn join(
        &self,
        entries: &[(String, PresenceEntry)],
        ttl: Duration,
    ) -> Result<(), FanoutError> {
        // One script per entry (topics live on different nodes of a
        // cluster); sent together, they travel pipelined.
        let calls = entries.iter().map(|(topic, entry)| {
            let (z, h) = self.keys(topic);
            let args = vec![
                v(JOIN),
                Value::Integer(2),
                v(z),
                v(h),
                v(entry.client.clone()),
                v(entry.uid.clone()),
                millis(ttl),
            ];
            command(&self.client, "EVAL", false, args)
        });
        futures_util::future::try_join_all(calls)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn leave(&self, topic: &str, client: &str) -> Result<(), FanoutError> {
        let (z, h) = self.keys(topic);
        command(&self.client, "ZREM", false, vec![v(z), v(client)])
            .await
            .map_err(unavailable)?;
        command(&self.client, "HDEL", false, vec![v(h), v(client)])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn present(&self, topic: &str) -> Result<Vec<PresenceEntry>, FanoutError> {
        let (z, h) = self.keys(topic);
        let args = vec![v(PRESENT), Value::Integer(2), v(z), v(h)];
        let reply = command(&self.client, "EVAL", false, args)
            .await
            .map_err(unavailable)?;
        let Value::Array(flat) = reply else {
            return Ok(Vec::new());
        };
        let mut entries: Vec<PresenceEntry> = flat
            .chunks(2)
            .filter_map(|kv| {
                Some(PresenceEntry {
                    client: kv.first()?.as_string()?,
                    uid: kv.get(1)?.as_string()?,
                })
            })
            .collect();
        entries.sort_by(|a, b| a.client.cmp(&b.client));
        Ok(entries)
    }
}

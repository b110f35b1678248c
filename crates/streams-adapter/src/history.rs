//! Topic history (`ports::TopicHistory`) on Redis; presence shares its keys'
//! layout (`presence.rs`).
//!
//! A topic's keys share one hash tag, so a Redis Cluster keeps them on one
//! node: `{<prefix>rt:<topic>}:h` (a stream: entry id `<offset>-1`, field `n`
//! the notification), `:m` (a hash: `e` epoch, `o` last offset), `:pz` and
//! `:ph` (presence: expiry per client, uid per client).
//!
//! A recorded message is appended and published by one script, so every
//! instance receives a topic's messages in offset order. It is published as
//! `{"offset": N, "epoch": "E", "message": <FanoutMessage>}` on the fan-out
//! channel.

use crate::fanout::RedisFanout;
use crate::reply::{self, command, v};
use async_trait::async_trait;
use fred::prelude::Value;
use ports::{
    FanoutError, FanoutMessage, HistoryOptions, HistoryRead, Notification, Publication,
    StreamPosition, TopicHistory,
};
use std::time::Duration;

/// KEYS: history, meta. ARGV: channel, message JSON, notification JSON,
/// size, ttl ms, meta ttl ms, epoch candidate.
const PUBLISH: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[7]
  redis.call('HSET', KEYS[2], 'e', epoch)
  redis.call('DEL', KEYS[1])
end
local offset = redis.call('HINCRBY', KEYS[2], 'o', 1)
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[4], offset .. '-1', 'n', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('PUBLISH', ARGV[1], '{"offset":' .. offset .. ',"epoch":"' .. epoch .. '","message":' .. ARGV[2] .. '}')
return {offset, epoch}
"#;

/// KEYS: history, meta. ARGV: epoch candidate, meta ttl ms, first offset
/// wanted ('' for none), count.
const READ: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[2], 'e', epoch)
  redis.call('DEL', KEYS[1])
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local offset = tonumber(redis.call('HGET', KEYS[2], 'o') or '0')
if ARGV[3] == '' then
  return {offset, epoch, {}}
end
return {offset, epoch, redis.call('XRANGE', KEYS[1], ARGV[3] .. '-0', '+', 'COUNT', ARGV[4])}
"#;

/// The keys of one topic: `{<prefix>rt:<topic>}:<suffix>`.
pub(crate) fn topic_key(prefix: &str, topic: &str, suffix: &str) -> String {
    format!("{{{prefix}rt:{topic}}}:{suffix}")
}

fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

pub(crate) fn millis(d: Duration) -> Value {
    Value::Integer(i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1))
}

pub(crate) fn unavailable(e: fred::error::Error) -> FanoutError {
    FanoutError::Unavailable(anyhow::anyhow!("redis: {e}"))
}

fn unexpected(what: &str) -> FanoutError {
    FanoutError::Unknown(anyhow::anyhow!("unexpected reply to the {what} script"))
}

/// `[offset, epoch, ...]` of the scripts' replies.
fn position(parts: &[Value]) -> Option<StreamPosition> {
    Some(StreamPosition {
        offset: parts.first()?.as_u64()?,
        epoch: parts.get(1)?.as_string()?,
    })
}

#[async_trait]
impl TopicHistory for RedisFanout {
    async fn forget(&self, topic: &str) -> Result<(), FanoutError> {
        // One hash tag: one node, one command, even on a cluster.
        let keys = vec![
            v(topic_key(self.prefix(), topic, "h")),
            v(topic_key(self.prefix(), topic, "m")),
        ];
        command(self.publisher(), "DEL", false, keys)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn publish_recorded(
        &self,
        topic: &str,
        message: &FanoutMessage,
        history: &HistoryOptions,
    ) -> Result<StreamPosition, FanoutError> {
        let json = serde_json::to_string(message).map_err(|e| FanoutError::Unknown(e.into()))?;
        let notification = serde_json::to_string(&message.notification)
            .map_err(|e| FanoutError::Unknown(e.into()))?;
        let args = vec![
            v(PUBLISH),
            Value::Integer(2),
            v(topic_key(self.prefix(), topic, "h")),
            v(topic_key(self.prefix(), topic, "m")),
            v(self.channel()),
            v(json),
            v(notification),
            Value::Integer(i64::try_from(history.size.max(1)).unwrap_or(i64::MAX)),
            millis(history.ttl),
            millis(history.meta_ttl()),
            v(new_epoch()),
        ];
        let reply = command(self.publisher(), "EVAL", false, args)
            .await
            .map_err(unavailable)?;
        let Value::Array(parts) = reply else {
            return Err(unexpected("publish"));
        };
        position(&parts).ok_or_else(|| unexpected("publish"))
    }

    async fn history(
        &self,
        topic: &str,
        since: Option<&StreamPosition>,
        history: &HistoryOptions,
    ) -> Result<HistoryRead, FanoutError> {
        let first = since.map_or(String::new(), |s| s.offset.saturating_add(1).to_string());
        let args = vec![
            v(READ),
            Value::Integer(2),
            v(topic_key(self.prefix(), topic, "h")),
            v(topic_key(self.prefix(), topic, "m")),
            v(new_epoch()),
            millis(history.meta_ttl()),
            v(first),
            Value::Integer(i64::try_from(history.size.max(1)).unwrap_or(i64::MAX)),
        ];
        let reply = command(self.publisher(), "EVAL", false, args)
            .await
            .map_err(unavailable)?;
        let Value::Array(mut parts) = reply else {
            return Err(unexpected("history"));
        };
        let position = position(&parts).ok_or_else(|| unexpected("history"))?;
        let entries = if parts.len() > 2 {
            reply::entries(parts.swap_remove(2))
        } else {
            Vec::new()
        };
        let publications: Vec<Publication> = entries
            .iter()
            .filter_map(|e| {
                let offset = e.id.split_once('-')?.0.parse().ok()?;
                let notification: Notification = serde_json::from_str(e.field("n")?).ok()?;
                Some(Publication {
                    offset,
                    notification,
                })
            })
            .collect();
        Ok(recovery(since, position, publications))
    }
}

/// Whether `publications` (read after `since`) is everything `since`
/// missed of a topic now at `position`.
pub(crate) fn recovery(
    since: Option<&StreamPosition>,
    position: StreamPosition,
    publications: Vec<Publication>,
) -> HistoryRead {
    let recovered = since.is_some_and(|s| {
        s.epoch == position.epoch
            && s.offset <= position.offset
            && u64::try_from(publications.len()).ok() == Some(position.offset - s.offset)
            && publications
                .iter()
                .zip(s.offset + 1..)
                .all(|(p, want)| p.offset == want)
    });
    HistoryRead {
        position,
        publications: if recovered { publications } else { Vec::new() },
        recovered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(offset: u64) -> Publication {
        Publication {
            offset,
            notification: Notification::new("m", serde_json::json!({})),
        }
    }

    fn at(offset: u64, epoch: &str) -> StreamPosition {
        StreamPosition {
            offset,
            epoch: epoch.into(),
        }
    }

    #[test]
    fn recovery_needs_the_same_epoch_and_every_offset_since() {
        let r = recovery(Some(&at(2, "e")), at(4, "e"), vec![p(3), p(4)]);
        assert!(r.recovered);
        assert_eq!(r.publications.len(), 2);
        assert!(recovery(Some(&at(4, "e")), at(4, "e"), vec![]).recovered);
        // Trimmed: 3 is gone.
        assert!(!recovery(Some(&at(2, "e")), at(5, "e"), vec![p(4), p(5)]).recovered);
        // Another epoch.
        assert!(!recovery(Some(&at(2, "x")), at(4, "e"), vec![p(3), p(4)]).recovered);
        // From the future (the history was lost and restarted).
        assert!(!recovery(Some(&at(9, "e")), at(4, "e"), vec![]).recovered);
        // Expired: nothing left though offsets moved on.
        let r = recovery(Some(&at(2, "e")), at(4, "e"), vec![]);
        assert!(!r.recovered && r.publications.is_empty());
        assert!(!recovery(None, at(4, "e"), vec![]).recovered);
    }
}

//! `RedisCache`: the `Cache` port on Redis (shared by every replica).

use crate::reply::{command, v};
use async_trait::async_trait;
use fred::clients::Client;
use fred::prelude::Value;
use ports::{Cache, CacheError};
use std::time::Duration;

/// Atomically: INCR, set the expiry on the first hit, return the count and ms left.
const INCR_WINDOW: &str = "local n = redis.call('INCR', KEYS[1]) \
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end \
local ttl = redis.call('PTTL', KEYS[1]) \
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end \
return {n, ttl}";

#[derive(Clone)]
pub struct RedisCache {
    client: Client,
    prefix: String,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisCache {
    /// Keys are stored as `<prefix>cache:<key>`.
    pub fn new(client: Client, prefix: &str) -> Self {
        Self {
            client,
            prefix: format!("{prefix}cache:"),
        }
    }

    fn key(&self, key: &str) -> Value {
        v(format!("{}{key}", self.prefix))
    }
}

fn unavailable(e: fred::error::Error) -> CacheError {
    CacheError::Unavailable(anyhow::anyhow!("redis: {e}"))
}

fn millis(d: Duration) -> Value {
    Value::Integer(i64::try_from(d.as_millis().max(1)).unwrap_or(i64::MAX))
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let reply = command(&self.client, "GET", false, vec![self.key(key)])
            .await
            .map_err(unavailable)?;
        Ok(match reply {
            Value::Null => None,
            other => other
                .as_bytes()
                .map(<[u8]>::to_vec)
                .or_else(|| other.as_string().map(String::into_bytes)),
        })
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        let args = vec![
            self.key(key),
            Value::Bytes(value.to_vec().into()),
            v("PX"),
            millis(ttl),
        ];
        command(&self.client, "SET", false, args)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        command(&self.client, "DEL", false, vec![self.key(key)])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn incr_window(
        &self,
        key: &str,
        window: Duration,
    ) -> Result<(u64, Duration), CacheError> {
        let args = vec![
            v(INCR_WINDOW),
            Value::Integer(1),
            self.key(key),
            millis(window),
        ];
        let reply = command(&self.client, "EVAL", false, args)
            .await
            .map_err(unavailable)?;
        let Value::Array(parts) = reply else {
            return Err(CacheError::Unknown(anyhow::anyhow!(
                "unexpected reply to the window script"
            )));
        };
        let n = parts.first().and_then(Value::as_u64).unwrap_or(0);
        let ttl = parts.get(1).and_then(Value::as_i64).unwrap_or(0).max(0) as u64;
        Ok((n, Duration::from_millis(ttl)))
    }
}

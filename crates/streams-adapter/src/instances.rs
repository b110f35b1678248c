//! `ports::Instances` on Redis: one hash (`<prefix>instances`), a field per
//! instance holding its last heartbeat as JSON. Readers drop the entries of
//! instances gone for an hour, so the hash stays small.

use crate::reply::{command, v};
use async_trait::async_trait;
use fred::clients::Client;
use fred::prelude::Value;
use ports::{AdminError, InstanceInfo, Instances};

/// Entries silent this long are deleted by the next reader.
const FORGET_AFTER_MS: i64 = 3_600_000;

/// The instances of one key prefix.
#[derive(Clone)]
pub struct RedisInstances {
    client: Client,
    key: String,
}

impl std::fmt::Debug for RedisInstances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisInstances")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl RedisInstances {
    pub fn new(client: Client, prefix: &str) -> Self {
        Self {
            client,
            key: format!("{prefix}instances"),
        }
    }
}

fn unavailable(e: fred::error::Error) -> AdminError {
    AdminError::Unavailable(anyhow::anyhow!("redis: {e}"))
}

#[async_trait]
impl Instances for RedisInstances {
    async fn beat(&self, info: &InstanceInfo) -> Result<(), AdminError> {
        let json = serde_json::to_string(info).map_err(|e| AdminError::Unknown(e.into()))?;
        command(
            &self.client,
            "HSET",
            false,
            vec![v(self.key.clone()), v(info.id.clone()), v(json)],
        )
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn alive(&self) -> Result<Vec<InstanceInfo>, AdminError> {
        let reply = command(&self.client, "HGETALL", false, vec![v(self.key.clone())])
            .await
            .map_err(unavailable)?;
        let values: Vec<String> = match reply {
            Value::Array(kv) => kv
                .chunks(2)
                .filter_map(|c| c.get(1).and_then(crate::reply::string))
                .collect(),
            Value::Map(m) => m
                .inner()
                .into_values()
                .filter_map(|v| crate::reply::string(&v))
                .collect(),
            _ => Vec::new(),
        };
        let now = chrono::Utc::now().timestamp_millis();
        let alive_ms =
            i64::try_from(ports::admin::INSTANCE_ALIVE_FOR.as_millis()).unwrap_or(i64::MAX);
        let mut alive = Vec::new();
        let mut forget = Vec::new();
        for info in values
            .iter()
            .filter_map(|j| serde_json::from_str::<InstanceInfo>(j).ok())
        {
            if now - info.last_seen_ms <= alive_ms {
                alive.push(info);
            } else if now - info.last_seen_ms > FORGET_AFTER_MS {
                forget.push(v(info.id));
            }
        }
        if !forget.is_empty() {
            let mut args = vec![v(self.key.clone())];
            args.extend(forget);
            // Best effort: the next reader tries again.
            let _ = command(&self.client, "HDEL", false, args).await;
        }
        alive.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(alive)
    }
}

/// `ports::SocketRegistry` on Redis: a hash per user
/// (`<prefix>sockets:<uid>`), a field per instance (`<id>@<started at ms>`)
/// counting its open sockets of that user; kept a day after the last change.
#[derive(Clone)]
pub struct RedisSocketRegistry {
    client: Client,
    prefix: String,
    instance: String,
}

impl std::fmt::Debug for RedisSocketRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSocketRegistry")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl RedisSocketRegistry {
    /// The registry of instance `instance_id`, started at `started_at_ms`
    /// (the same values its heartbeat carries).
    pub fn new(client: Client, prefix: &str, instance_id: &str, started_at_ms: i64) -> Self {
        Self {
            client,
            prefix: prefix.to_owned(),
            instance: ports::admin::instance_key(instance_id, started_at_ms),
        }
    }

    fn key(&self, uid: &str) -> String {
        format!("{}sockets:{uid}", self.prefix)
    }

    async fn add(&self, uid: &str, n: i64) -> Result<(), AdminError> {
        let key = self.key(uid);
        let left = command(
            &self.client,
            "HINCRBY",
            false,
            vec![v(key.clone()), v(self.instance.clone()), Value::Integer(n)],
        )
        .await
        .map_err(unavailable)?;
        if left.as_i64().is_some_and(|l| l <= 0) {
            command(
                &self.client,
                "HDEL",
                false,
                vec![v(key.clone()), v(self.instance.clone())],
            )
            .await
            .map_err(unavailable)?;
        }
        command(
            &self.client,
            "EXPIRE",
            false,
            vec![v(key), Value::Integer(86_400)],
        )
        .await
        .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl ports::SocketRegistry for RedisSocketRegistry {
    async fn opened(&self, uid: &str) -> Result<(), AdminError> {
        self.add(uid, 1).await
    }

    async fn closed(&self, uid: &str) -> Result<(), AdminError> {
        self.add(uid, -1).await
    }

    async fn sockets(&self, uid: &str) -> Result<Vec<(String, u64)>, AdminError> {
        let reply = command(&self.client, "HGETALL", false, vec![v(self.key(uid))])
            .await
            .map_err(unavailable)?;
        let pairs: Vec<(String, u64)> = match reply {
            Value::Array(kv) => kv
                .chunks(2)
                .filter_map(|c| {
                    let k = crate::reply::string(c.first()?)?;
                    let n = c
                        .get(1)?
                        .as_u64()
                        .or_else(|| crate::reply::string(c.get(1)?)?.parse().ok())?;
                    Some((k, n))
                })
                .collect(),
            Value::Map(m) => m
                .inner()
                .into_iter()
                .filter_map(|(k, val)| {
                    let n = val
                        .as_u64()
                        .or_else(|| crate::reply::string(&val)?.parse().ok())?;
                    Some((k.as_str()?.to_string(), n))
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(pairs.into_iter().filter(|(_, n)| *n > 0).collect())
    }
}

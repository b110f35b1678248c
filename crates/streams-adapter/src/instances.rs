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

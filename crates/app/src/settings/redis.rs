//! Redis: where it is, and the prefix of every key this app uses.

use super::reader::Reader;

pub(crate) const VARIABLES: &[&str] = &["REDIS_URL", "REDIS_KEY_PREFIX"];

pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

#[derive(Clone)]
pub struct RedisSection {
    /// May hold a password: never printed.
    pub url: String,
    /// Every Redis key, stream and channel this process uses starts with it.
    pub key_prefix: String,
}

/// The URL (it may hold a password) is never printed.
impl std::fmt::Debug for RedisSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSection")
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisSection {
    pub(crate) fn read(r: &mut Reader<'_>) -> Self {
        // A Redis Cluster: `redis-cluster://host:port?node=host2:port2&...`.
        let schemes = ["redis", "rediss", "redis-cluster", "rediss-cluster"];
        let url = r.url("REDIS_URL", DEFAULT_REDIS_URL, &schemes);
        if let Some(Err(e)) = queue_adapter::cluster_nodes(&url) {
            r.problem("REDIS_URL", e);
        }
        let key_prefix = r.string("REDIS_KEY_PREFIX", "trellis:");
        Self { url, key_prefix }
    }

    /// The queue's connection pool.
    pub fn pool_settings(&self) -> queue_adapter::RedisSettings {
        queue_adapter::RedisSettings::new(self.url.clone())
    }

    /// The queue's keys.
    pub fn queue_settings(&self) -> queue_adapter::QueueSettings {
        queue_adapter::QueueSettings::new(&self.key_prefix)
    }
}

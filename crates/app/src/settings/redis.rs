//! Redis: where it is, and the prefix of every key this app uses.

use super::reader::Reader;

pub(crate) const VARIABLES: &[&str] = &[
    "REDIS_URL",
    "REDIS_KEY_PREFIX",
    "REDIS_TLS_CA_FILE",
    "REDIS_TLS_CERT_FILE",
    "REDIS_TLS_KEY_FILE",
];

pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

#[derive(Clone)]
pub struct RedisSection {
    /// May hold a password: never printed.
    pub url: String,
    /// Every Redis key, stream and channel this process uses starts with it.
    pub key_prefix: String,
    /// For `rediss://`: a CA to trust besides the system's roots
    /// (`REDIS_TLS_CA_FILE`), a client certificate (`REDIS_TLS_CERT_FILE`,
    /// `REDIS_TLS_KEY_FILE`), read when the settings are.
    pub tls: ports::TlsMaterial,
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
        let mut pem = |var: &str| {
            let path = r.raw(var)?;
            match std::fs::read(path.trim()) {
                Ok(bytes) if bytes.windows(11).any(|w| w == b"-----BEGIN ") => Some(bytes),
                Ok(_) => {
                    r.problem(var, "is not a PEM file");
                    None
                }
                Err(e) => {
                    r.problem(var, format!("cannot be read: {e}"));
                    None
                }
            }
        };
        let ca_pem = pem("REDIS_TLS_CA_FILE");
        let client = match (pem("REDIS_TLS_CERT_FILE"), pem("REDIS_TLS_KEY_FILE")) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                r.problem(
                    "REDIS_TLS_CERT_FILE",
                    "and REDIS_TLS_KEY_FILE go together (a client certificate and its key)",
                );
                None
            }
        };
        let tls = ports::TlsMaterial { ca_pem, client };
        let plain = !url.starts_with("rediss");
        if plain && tls != ports::TlsMaterial::default() {
            r.problem(
                "REDIS_TLS_CA_FILE",
                "and the other REDIS_TLS_* files need a rediss:// (or rediss-cluster://) REDIS_URL",
            );
        }
        Self {
            url,
            key_prefix,
            tls,
        }
    }

    /// The queue's connection pool.
    pub fn pool_settings(&self) -> queue_adapter::RedisSettings {
        queue_adapter::RedisSettings {
            tls: self.tls.clone(),
            ..queue_adapter::RedisSettings::new(self.url.clone())
        }
    }

    /// The queue's keys.
    pub fn queue_settings(&self) -> queue_adapter::QueueSettings {
        queue_adapter::QueueSettings::new(&self.key_prefix)
    }
}

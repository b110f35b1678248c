//! Redis: where it is, and the prefix of every key this app uses.

use super::reader::Reader;
use secrecy::{ExposeSecret as _, SecretString};

pub(crate) const VARIABLES: &[&str] = &[
    "REDIS_URL",
    "REDIS_KEY_PREFIX",
    "REDIS_TLS_CA_FILE",
    "REDIS_TLS_CERT_FILE",
    "REDIS_TLS_KEY_FILE",
    "REDIS_MAX_CONNECTIONS",
    "REDIS_WAIT_REPLICAS",
    "REDIS_WAIT_TIMEOUT_MS",
];

pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The URL (which may hold a password) is a `SecretString` and the TLS
/// material prints no key: `Debug` shows neither.
#[derive(Clone, Debug)]
pub struct RedisSection {
    /// May hold a password: never printed.
    pub url: SecretString,
    /// Every Redis key, stream and channel this process uses starts with it.
    pub key_prefix: String,
    /// For `rediss://`: a CA to trust besides the system's roots
    /// (`REDIS_TLS_CA_FILE`), a client certificate (`REDIS_TLS_CERT_FILE`,
    /// `REDIS_TLS_KEY_FILE`), read when the settings are.
    pub tls: ports::TlsMaterial,
    /// The most Redis connections this process opens (to each node of a
    /// cluster), in all: see [`RedisBudget`].
    pub max_connections: usize,
    /// The replicas the relay's publishes, enqueues and finished jobs'
    /// removals wait for (`REDIS_WAIT_REPLICAS`: `auto`, `off` or a number;
    /// `REDIS_WAIT_TIMEOUT_MS`).
    pub replica_wait: ports::ReplicaWait,
}

impl RedisSection {
    pub(crate) fn read(r: &mut Reader<'_>) -> Self {
        // A Redis Cluster: `redis-cluster://host:port?node=host2:port2&...`;
        // behind Sentinel: `redis-sentinel://host:port?node=..&sentinelServiceName=..`.
        let schemes = [
            "redis",
            "rediss",
            "redis-cluster",
            "rediss-cluster",
            "redis-sentinel",
            "rediss-sentinel",
        ];
        let url = r.url("REDIS_URL", DEFAULT_REDIS_URL, &schemes);
        if let Some(Err(e)) = queue_adapter::cluster_nodes(&url) {
            r.problem("REDIS_URL", e);
        }
        if let Some(Err(e)) = queue_adapter::sentinel_parts(&url) {
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
                "and the other REDIS_TLS_* files need a rediss:// (or rediss-cluster://, rediss-sentinel://) REDIS_URL",
            );
        }
        let max_connections = r.ranged("REDIS_MAX_CONNECTIONS", 16_usize, 4, 10_000, "connections");
        let acks = match r.raw("REDIS_WAIT_REPLICAS") {
            None => ports::ReplicaAcks::Auto,
            Some(raw) => ports::ReplicaAcks::parse(&raw).unwrap_or_else(|e| {
                r.problem("REDIS_WAIT_REPLICAS", e);
                ports::ReplicaAcks::Auto
            }),
        };
        let replica_wait = ports::ReplicaWait {
            acks,
            timeout: r.millis("REDIS_WAIT_TIMEOUT_MS", 1000, 1, 60_000),
        };
        Self {
            url: url.into(),
            key_prefix,
            tls,
            max_connections,
            replica_wait,
        }
    }

    /// The queue's connection pool, of `max_connections`.
    pub fn pool_settings(&self, max_connections: usize) -> queue_adapter::RedisSettings {
        queue_adapter::RedisSettings {
            tls: self.tls.clone(),
            max_connections,
            ..queue_adapter::RedisSettings::new(self.url.expose_secret().to_owned())
        }
    }

    /// The queue's keys.
    pub fn queue_settings(&self) -> queue_adapter::QueueSettings {
        queue_adapter::QueueSettings {
            replica_wait: self.replica_wait,
            ..queue_adapter::QueueSettings::new(&self.key_prefix)
        }
    }
}

/// How one process splits `REDIS_MAX_CONNECTIONS` (per node of a
/// cluster): the shared client of the caches, presence and streams (one);
/// the realtime fan-out's subscriber (one per hub: the `serve` role's and
/// the `worker` role's); each consumer group's blocking reader (the worker
/// role's); the job queue's pool (its shared connection, blocking waits for
/// work, readiness) gets the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisBudget {
    /// The shared client, the subscribers and the consumers.
    pub fixed: usize,
    /// The queue's pool.
    pub queue: usize,
}

impl RedisBudget {
    /// The queue's pool needs one shared connection and one to wait on.
    const QUEUE_LEAST: usize = 2;

    pub fn split(
        total: usize,
        serves: bool,
        works: bool,
        consumer_groups: usize,
    ) -> Result<Self, String> {
        let fixed = 1 + usize::from(serves) + usize::from(works) * (1 + consumer_groups);
        if total < fixed + Self::QUEUE_LEAST {
            return Err(format!(
                "REDIS_MAX_CONNECTIONS={total} is too few for this process: it needs at least {}",
                fixed + Self::QUEUE_LEAST
            ));
        }
        // deadpool lends the queue's shared connection out of the pool for
        // good (and makes another after a reconnect): one of the pool's
        // slots is held back for it.
        Ok(Self {
            fixed,
            queue: total - fixed - 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_fits_the_budget_and_refuses_one_too_small() {
        for total in 4..64 {
            for (serves, works) in [(true, false), (false, true), (true, true)] {
                match RedisBudget::split(total, serves, works, 2) {
                    Ok(b) => {
                        assert!(b.fixed + b.queue < total, "{total}: {b:?}");
                        assert!(b.queue >= 1);
                    }
                    Err(e) => assert!(e.contains("too few"), "{e}"),
                }
            }
        }
        assert_eq!(
            RedisBudget::split(16, false, true, 2),
            Ok(RedisBudget {
                fixed: 4,
                queue: 11
            })
        );
        assert!(RedisBudget::split(6, true, true, 2).is_err());
    }
}

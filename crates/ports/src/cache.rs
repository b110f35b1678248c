//! A shared key/value cache and counters, for what several replicas must agree
//! on (rate limits, short-lived flags).

use async_trait::async_trait;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CacheError {
    #[error("cache unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// The value under `key`, or `None` if absent or expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError>;

    /// Stores `value` under `key` for `ttl`.
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError>;

    /// Removes `key`; removing an absent key is not an error.
    async fn delete(&self, key: &str) -> Result<(), CacheError>;

    /// Adds one to the counter under `key`, creating it with a lifetime of
    /// `window` if absent, atomically. Returns the new count and the time left
    /// before the counter expires. MUST store the count so that `get(key)`
    /// reads it back in decimal ASCII (a peek that does not count).
    async fn incr_window(&self, key: &str, window: Duration)
    -> Result<(u64, Duration), CacheError>;
}

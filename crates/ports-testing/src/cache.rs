//! An in-memory `Cache` with real expiry.

use async_trait::async_trait;
use ports::cache::{Cache, CacheError};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct InMemoryCache {
    entries: Mutex<HashMap<String, (Vec<u8>, Instant)>>,
}

impl InMemoryCache {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, (Vec<u8>, Instant)>) -> T) -> T {
        let mut map = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        map.retain(|_, (_, until)| *until > now);
        f(&mut map)
    }
}

#[async_trait]
impl Cache for InMemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(self.with(|m| m.get(key).map(|(v, _)| v.clone())))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        self.with(|m| m.insert(key.to_owned(), (value.to_vec(), Instant::now() + ttl)));
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.with(|m| m.remove(key));
        Ok(())
    }

    async fn incr_window(
        &self,
        key: &str,
        window: Duration,
    ) -> Result<(u64, Duration), CacheError> {
        Ok(self.with(|m| {
            let now = Instant::now();
            let entry = m
                .entry(key.to_owned())
                .or_insert_with(|| (b"0".to_vec(), now + window));
            let n = String::from_utf8_lossy(&entry.0)
                .parse::<u64>()
                .unwrap_or(0)
                + 1;
            entry.0 = n.to_string().into_bytes();
            (n, entry.1.saturating_duration_since(now))
        }))
    }
}

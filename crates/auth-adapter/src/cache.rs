//! A bounded cache of verified tokens, so a client that sends the same token
//! on every request pays for one RSA verification per token, not per request.
//!
//! Entries are keyed by the SHA-256 of the token, live until the token's `exp`,
//! and remember the `kid` that signed them: a hit is honoured only while that
//! key is still in the current key set, so a revoked key takes effect at once.

use domain::VerifiedIdentity;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::RwLock;

#[derive(Debug, Clone)]
struct Entry {
    identity: VerifiedIdentity,
    /// Unix seconds after which the entry is dead (exp + leeway).
    expires_at: i64,
    kid: String,
}

pub(crate) type TokenHash = [u8; 32];

pub(crate) fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(Debug)]
pub(crate) struct VerifiedCache {
    capacity: usize,
    entries: RwLock<HashMap<TokenHash, Entry>>,
}

impl VerifiedCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: RwLock::new(HashMap::new()),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The identity for `key` if cached, unexpired at `now`, and its signing
    /// key is still current (`kid_is_current`).
    pub(crate) fn get(
        &self,
        key: &TokenHash,
        now: i64,
        kid_is_current: impl FnOnce(&str) -> bool,
    ) -> Option<VerifiedIdentity> {
        let entries = self.entries.read().ok()?;
        let e = entries.get(key)?;
        (e.expires_at > now && kid_is_current(&e.kid)).then(|| e.identity.clone())
    }

    pub(crate) fn insert(
        &self,
        key: TokenHash,
        identity: VerifiedIdentity,
        expires_at: i64,
        kid: &str,
        now: i64,
    ) {
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        if entries.len() >= self.capacity {
            entries.retain(|_, e| e.expires_at > now);
            if entries.len() >= self.capacity {
                // Still full of live tokens: start over rather than grow.
                entries.clear();
            }
        }
        entries.insert(
            key,
            Entry {
                identity,
                expires_at,
                kid: kid.to_owned(),
            },
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.read().map(|e| e.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::FirebaseUid;

    fn id(uid: &str) -> VerifiedIdentity {
        VerifiedIdentity::new(FirebaseUid::parse(uid).unwrap())
    }

    #[test]
    fn hits_need_a_live_entry_and_a_current_key() {
        let c = VerifiedCache::new(10);
        let k = hash("t1");
        c.insert(k, id("a"), 100, "kid1", 0);
        assert!(c.get(&k, 50, |kid| kid == "kid1").is_some());
        assert!(c.get(&k, 100, |_| true).is_none(), "expired");
        assert!(c.get(&k, 50, |kid| kid == "kid2").is_none(), "key revoked");
        assert!(c.get(&hash("t2"), 50, |_| true).is_none());
    }

    #[test]
    fn the_cache_never_grows_past_its_capacity() {
        let c = VerifiedCache::new(3);
        for i in 0..10 {
            c.insert(hash(&format!("t{i}")), id("a"), 1000, "k", 0);
            assert!(c.len() <= 3);
        }
    }
}

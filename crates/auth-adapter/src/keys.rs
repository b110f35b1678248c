//! Google's token-signing public keys: fetched, cached for the response's
//! `Cache-Control: max-age`, refreshed one fetch at a time, and kept in use
//! for a grace period when a refresh fails.

use jsonwebtoken::DecodingKey;
use ports::{InvalidToken, VerifyTokenError};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Used when a response has no usable `max-age`.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);
/// After a failed fetch, wait this long before trying again (requests are
/// served from the cached keys meanwhile, if still in grace).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Key documents larger than this are refused.
const MAX_KEYS_BYTES: usize = 256 * 1024;
/// A `max-age` above this is lowered to it: a key server cannot pin a key
/// set (and hide a revocation) for longer.
const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// How keys are fetched and kept.
#[derive(Debug, Clone)]
pub struct KeySettings {
    /// Google's x509 endpoint by default; a JWKS document also works.
    pub url: String,
    pub fetch_timeout: Duration,
    /// How long past their `max-age` cached keys stay usable while refreshes fail.
    pub grace: Duration,
    /// At most one fetch per this interval because of an unknown `kid`.
    pub unknown_kid_refetch: Duration,
    /// A `max-age` below this is raised to it, so a misconfigured key server
    /// cannot make every request fetch.
    pub min_max_age: Duration,
}

impl KeySettings {
    /// Google's x509 certificates for Firebase ID tokens.
    pub const GOOGLE_X509_URL: &'static str =
        "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com";

    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            fetch_timeout: Duration::from_secs(5),
            grace: Duration::from_secs(3600),
            unknown_kid_refetch: Duration::from_secs(60),
            min_max_age: Duration::from_secs(30),
        }
    }
}

#[derive(Debug)]
pub(crate) struct KeySet {
    keys: HashMap<String, Arc<DecodingKey>>,
    fresh_until: Instant,
    usable_until: Instant,
}

impl KeySet {
    pub(crate) fn get(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        self.keys.get(kid).cloned()
    }

    pub(crate) fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    fn is_fresh(&self, now: Instant) -> bool {
        now < self.fresh_until
    }

    fn is_usable(&self, now: Instant) -> bool {
        now < self.usable_until
    }
}

#[derive(Debug, Default)]
struct RefreshState {
    last_unknown_kid_fetch: Option<Instant>,
    last_failure: Option<Instant>,
}

#[derive(Debug)]
pub(crate) struct KeyStore {
    settings: KeySettings,
    http: reqwest::Client,
    current: RwLock<Option<Arc<KeySet>>>,
    /// Held for the duration of a fetch: one fetch at a time.
    refresh: tokio::sync::Mutex<RefreshState>,
    fetches: std::sync::atomic::AtomicU64,
}

fn max_age(headers: &reqwest::header::HeaderMap, min: Duration) -> Duration {
    headers
        .get_all(reqwest::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|d| {
            let (k, v) = d.trim().split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("max-age")
                .then(|| v.trim().parse::<u64>().ok())?
        })
        .map_or(DEFAULT_MAX_AGE, Duration::from_secs)
        .clamp(min.min(MAX_MAX_AGE), MAX_MAX_AGE)
}

/// Parses Google's x509 format (`{"kid": "-----BEGIN CERTIFICATE-----..."}`)
/// or a JWKS (`{"keys": [...]}`). Keys that do not parse are skipped.
fn parse_keys(body: &[u8]) -> anyhow::Result<HashMap<String, Arc<DecodingKey>>> {
    let doc: serde_json::Value = serde_json::from_slice(body)?;
    let mut keys = HashMap::new();
    if let Some(list) = doc.get("keys").and_then(|k| k.as_array()) {
        for jwk in list {
            let parsed = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(jwk.clone())
                .ok()
                .and_then(|j| Some((j.common.key_id.clone()?, DecodingKey::from_jwk(&j).ok()?)));
            match parsed {
                Some((kid, key)) => {
                    keys.insert(kid, Arc::new(key));
                }
                None => tracing::warn!("skipping a JWK that does not parse"),
            }
        }
    } else if let Some(map) = doc.as_object() {
        for (kid, pem) in map {
            match pem
                .as_str()
                .map(|p| DecodingKey::from_rsa_pem(p.as_bytes()))
            {
                Some(Ok(key)) => {
                    keys.insert(kid.clone(), Arc::new(key));
                }
                _ => tracing::warn!(%kid, "skipping a certificate that does not parse"),
            }
        }
    }
    anyhow::ensure!(!keys.is_empty(), "the key document holds no usable key");
    Ok(keys)
}

impl KeyStore {
    pub(crate) fn new(settings: KeySettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(settings.fetch_timeout)
            .connect_timeout(settings.fetch_timeout)
            .build()?;
        Ok(Self {
            settings,
            http,
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
            fetches: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// How many fetches were attempted (for tests and metrics).
    pub(crate) fn fetch_count(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn snapshot(&self) -> Option<Arc<KeySet>> {
        self.current.read().ok().and_then(|g| g.clone())
    }

    /// The cached key set if it is within its `max-age`.
    pub(crate) fn fresh_snapshot(&self) -> Option<Arc<KeySet>> {
        self.snapshot().filter(|s| s.is_fresh(Instant::now()))
    }

    fn store(&self, set: Arc<KeySet>) {
        if let Ok(mut g) = self.current.write() {
            *g = Some(set);
        }
    }

    async fn fetch(&self) -> anyhow::Result<Arc<KeySet>> {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let res = self
            .http
            .get(&self.settings.url)
            .send()
            .await?
            .error_for_status()?;
        let ttl = max_age(res.headers(), self.settings.min_max_age);
        if res
            .content_length()
            .is_some_and(|n| n > MAX_KEYS_BYTES as u64)
        {
            anyhow::bail!("key document is larger than {MAX_KEYS_BYTES} bytes");
        }
        // Read in chunks, so a body with no length cannot grow past the cap.
        let mut res = res;
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await? {
            anyhow::ensure!(
                body.len() + chunk.len() <= MAX_KEYS_BYTES,
                "key document is larger than {MAX_KEYS_BYTES} bytes"
            );
            body.extend_from_slice(&chunk);
        }
        let keys = parse_keys(&body)?;
        let now = Instant::now();
        tracing::info!(
            keys = keys.len(),
            max_age_secs = ttl.as_secs(),
            "fetched token signing keys"
        );
        let fresh_until = now.checked_add(ttl).unwrap_or(now);
        Ok(Arc::new(KeySet {
            keys,
            fresh_until,
            usable_until: fresh_until
                .checked_add(self.settings.grace)
                .unwrap_or(fresh_until),
        }))
    }

    /// The key for `kid`, fetching (once, whoever else is waiting) if the
    /// cached set is stale, missing, or lacks `kid` (at most once per
    /// `unknown_kid_refetch` for that reason).
    pub(crate) async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>, VerifyTokenError> {
        let cached = self.snapshot();
        let now = Instant::now();
        if let Some(set) = &cached {
            if set.is_fresh(now) {
                if let Some(k) = set.get(kid) {
                    return Ok(k);
                }
            } else if set.is_usable(now) {
                // Stale but in grace: if a refresh is already running, do not
                // queue behind it; answer from what we have.
                if let Ok(guard) = self.refresh.try_lock() {
                    drop(guard);
                } else {
                    return set.get(kid).ok_or(InvalidToken::UnknownKeyId.into());
                }
            }
        }

        let mut state = self.refresh.lock().await;
        let now = Instant::now();
        let current = self.snapshot();
        if let Some(set) = &current
            && set.is_fresh(now)
            && let Some(k) = set.get(kid)
        {
            // Someone refreshed while we waited.
            return Ok(k);
        }
        let fresh = current.as_ref().is_some_and(|s| s.is_fresh(now));
        let may_fetch = if fresh {
            state
                .last_unknown_kid_fetch
                .is_none_or(|t| now.duration_since(t) >= self.settings.unknown_kid_refetch)
        } else {
            state
                .last_failure
                .is_none_or(|t| now.duration_since(t) >= RETRY_AFTER_FAILURE)
        };
        if may_fetch {
            if fresh {
                state.last_unknown_kid_fetch = Some(now);
            }
            match self.fetch().await {
                Ok(set) => {
                    state.last_failure = None;
                    self.store(set.clone());
                    return set.get(kid).ok_or(InvalidToken::UnknownKeyId.into());
                }
                Err(e) => {
                    state.last_failure = Some(Instant::now());
                    tracing::warn!(error = %format!("{e:#}"), url = %self.settings.url,
                        "fetching token signing keys failed; using cached keys while they are in grace");
                }
            }
        }
        match current {
            Some(set) if set.is_usable(Instant::now()) => {
                set.get(kid).ok_or(InvalidToken::UnknownKeyId.into())
            }
            _ => Err(VerifyTokenError::Unavailable(anyhow::anyhow!(
                "no usable token signing keys (fetching {} failed)",
                self.settings.url
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{CACHE_CONTROL, HeaderMap, HeaderValue};

    #[test]
    fn max_age_is_read_from_cache_control() {
        let mut h = HeaderMap::new();
        let min = Duration::from_secs(30);
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=19863, must-revalidate"),
        );
        assert_eq!(max_age(&h, min), Duration::from_secs(19863));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=0"));
        assert_eq!(max_age(&h, min), min);
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("max-age=18446744073709551615"),
        );
        assert_eq!(max_age(&h, min), MAX_MAX_AGE, "capped, never overflowing");
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        assert_eq!(max_age(&h, min), DEFAULT_MAX_AGE);
        assert_eq!(max_age(&HeaderMap::new(), min), DEFAULT_MAX_AGE);
    }

    #[test]
    fn key_documents_without_usable_keys_are_errors() {
        assert!(parse_keys(b"{}").is_err());
        assert!(parse_keys(b"{\"k\": \"not a pem\"}").is_err());
        assert!(parse_keys(b"[1,2]").is_err());
        assert!(parse_keys(b"garbage").is_err());
    }
}

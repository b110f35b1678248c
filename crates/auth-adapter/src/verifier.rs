//! `FirebaseTokenVerifier`: `verifyIdToken`, in Rust.

use crate::cache::{self, VerifiedCache};
use crate::claims::{self, Expectations, FirebaseClaims};
use crate::dev::DEV_KEY_ID;
use crate::jwt;
use crate::keys::{KeySettings, KeyStore};
use async_trait::async_trait;
use domain::VerifiedIdentity;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ports::{InvalidToken, TokenVerifier, VerifyTokenError};
use std::time::Duration;

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// How to verify tokens.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub project_id: String,
    pub keys: KeySettings,
    /// Accept the Auth emulator's unsigned tokens (`alg: none`).
    pub emulator: bool,
    /// Accept dev tokens signed with this secret (local mode only).
    pub dev_secret: Option<String>,
    /// Clock skew forgiven on `exp`, `iat` and `auth_time`.
    pub leeway: Duration,
    /// Verified tokens kept (0 turns the cache off).
    pub cache_capacity: usize,
}

impl AuthSettings {
    pub fn new(project_id: impl Into<String>) -> Self {
        Self {
            project_id: project_id.into(),
            keys: KeySettings::new(KeySettings::GOOGLE_X509_URL),
            emulator: false,
            dev_secret: None,
            leeway: Duration::from_secs(30),
            cache_capacity: 10_000,
        }
    }
}

/// Verifies Firebase ID tokens as the Admin SDKs' `verifyIdToken` does.
#[derive(Debug)]
pub struct FirebaseTokenVerifier {
    expect: Expectations,
    emulator: bool,
    dev_key: Option<DecodingKey>,
    keys: KeyStore,
    cache: VerifiedCache,
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

fn signature_only(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    // Claims are checked by `claims::check`, with precise reasons.
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    v
}

fn map_jwt_error(e: &jsonwebtoken::errors::Error) -> InvalidToken {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::InvalidSignature => InvalidToken::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            InvalidToken::UnsupportedAlgorithm("mismatch".into())
        }
        ErrorKind::Json(_) => InvalidToken::BadClaim("a claim has the wrong type".into()),
        _ => InvalidToken::Malformed,
    }
}

impl FirebaseTokenVerifier {
    pub fn new(settings: AuthSettings) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !settings.project_id.is_empty(),
            "the Firebase project id is empty"
        );
        let leeway = i64::try_from(settings.leeway.as_secs()).unwrap_or(30);
        Ok(Self {
            expect: Expectations::for_project(&settings.project_id, leeway),
            emulator: settings.emulator,
            dev_key: settings
                .dev_secret
                .as_deref()
                .map(|s| DecodingKey::from_secret(s.as_bytes())),
            keys: KeyStore::new(settings.keys)?,
            cache: VerifiedCache::new(settings.cache_capacity),
        })
    }

    /// How many key fetches were attempted so far.
    pub fn key_fetches(&self) -> u64 {
        self.keys.fetch_count()
    }

    /// A cache hit needs its key in a fresh key set: once the set goes
    /// stale the token is verified again, which refreshes the keys, so a
    /// revoked key or a key server past its grace is noticed.
    fn cached(&self, hash: &cache::TokenHash, now: i64) -> Option<VerifiedIdentity> {
        let current = self.keys.fresh_snapshot();
        self.cache.get(hash, now, |kid| {
            current.as_ref().is_some_and(|s| s.contains(kid))
        })
    }

    fn check_claims(
        &self,
        claims: FirebaseClaims,
    ) -> Result<(VerifiedIdentity, i64), InvalidToken> {
        claims::check(claims, &self.expect, now_secs())
    }

    async fn verify_rs256(
        &self,
        token: &str,
        parts: &jwt::Parts<'_>,
        kid: Option<String>,
    ) -> Result<VerifiedIdentity, VerifyTokenError> {
        let kid = kid.ok_or(InvalidToken::MissingKeyId)?;
        let now = now_secs();
        let hash = self.cache.enabled().then(|| cache::hash(token));
        if let Some(identity) = hash.as_ref().and_then(|h| self.cached(h, now)) {
            return Ok(identity);
        }
        // Claims first, unverified: an expired or foreign token is refused
        // without looking up (and perhaps fetching) any key.
        let unverified: FirebaseClaims = jwt::payload(parts)?;
        self.check_claims(unverified)?;
        let key = self.keys.key(&kid).await?;
        let data =
            jsonwebtoken::decode::<FirebaseClaims>(token, &key, &signature_only(Algorithm::RS256))
                .map_err(|e| map_jwt_error(&e))?;
        let (identity, exp) = self.check_claims(data.claims)?;
        if let Some(hash) = hash {
            let expires_at = exp.saturating_add(self.expect.leeway_secs);
            self.cache
                .insert(hash, identity.clone(), expires_at, &kid, now);
        }
        Ok(identity)
    }
}

#[async_trait]
impl TokenVerifier for FirebaseTokenVerifier {
    fn verify_cached(&self, token: &str) -> Option<VerifiedIdentity> {
        if !self.cache.enabled() || token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return None;
        }
        self.cached(&cache::hash(token), now_secs())
    }

    async fn verify(&self, token: &str) -> Result<VerifiedIdentity, VerifyTokenError> {
        if token.is_empty() {
            return Err(InvalidToken::Missing.into());
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(InvalidToken::TooLong.into());
        }
        let parts = jwt::split(token)?;
        let header = jwt::header(&parts)?;
        match header.alg.as_str() {
            "RS256" => self.verify_rs256(token, &parts, header.kid).await,
            "none" => {
                if !self.emulator {
                    return Err(InvalidToken::EmulatorTokenRefused.into());
                }
                if !parts.signature.is_empty() {
                    return Err(InvalidToken::Malformed.into());
                }
                let claims: FirebaseClaims = jwt::payload(&parts)?;
                Ok(self.check_claims(claims)?.0)
            }
            "HS256" if header.kid.as_deref() == Some(DEV_KEY_ID) => {
                let key = self.dev_key.as_ref().ok_or(InvalidToken::DevTokenRefused)?;
                let data = jsonwebtoken::decode::<FirebaseClaims>(
                    token,
                    key,
                    &signature_only(Algorithm::HS256),
                )
                .map_err(|e| map_jwt_error(&e))?;
                Ok(self.check_claims(data.claims)?.0)
            }
            other => {
                Err(InvalidToken::UnsupportedAlgorithm(other.chars().take(16).collect()).into())
            }
        }
    }
}

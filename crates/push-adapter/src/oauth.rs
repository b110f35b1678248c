//! OAuth2 access tokens for a service account (the JWT-bearer grant, RFC
//! 7523): cached until shortly before they expire, refreshed one request at
//! a time however many sends need one.

use crate::credentials::ServiceAccountKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ports::SendPushError;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The scope FCM HTTP v1 needs.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The scope the Identity Toolkit's admin calls need.
pub const IDENTITY_SCOPE: &str = "https://www.googleapis.com/auth/identitytoolkit";
/// How long an assertion is valid (Google's maximum).
const ASSERTION_LIFETIME_SECS: i64 = 3600;
/// Token endpoint answers larger than this are refused.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

/// An access token and when to stop using it.
pub(crate) struct AccessToken {
    pub(crate) bearer: String,
    refresh_at: Instant,
}

impl std::fmt::Debug for AccessToken {
    /// The bearer token is a credential: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("refresh_at", &self.refresh_at)
            .finish_non_exhaustive()
    }
}

/// The last failed fetch, shared with callers that wait behind it.
#[derive(Default)]
struct RefreshState {
    failed: Option<(Instant, String)>,
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct TokenError {
    error: Option<String>,
    error_description: Option<String>,
}

pub(crate) struct AccessTokens {
    http: reqwest::Client,
    /// What the tokens are for (an OAuth2 scope).
    scope: &'static str,
    token_url: String,
    client_email: String,
    key_id: Option<String>,
    key: EncodingKey,
    /// Refresh this long before the token expires.
    margin: Duration,
    /// After a failed fetch, callers get that failure (as "retry later")
    /// without fetching again for this long: a token endpoint that hangs or
    /// refuses costs one request per window, not one per queued send.
    failure_window: Duration,
    current: RwLock<Option<Arc<AccessToken>>>,
    /// Held while fetching: one refresh at a time.
    refresh: tokio::sync::Mutex<RefreshState>,
    fetches: AtomicU64,
}

impl std::fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokens")
            .field("token_url", &self.token_url)
            .field("client_email", &self.client_email)
            .field("fetches", &self.fetches.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl AccessTokens {
    pub(crate) fn new(
        http: reqwest::Client,
        scope: &'static str,
        key: &ServiceAccountKey,
        token_url: String,
        margin: Duration,
        failure_window: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            http,
            scope,
            token_url,
            client_email: key.client_email.clone(),
            key_id: key.private_key_id.clone(),
            key: key.encoding_key()?,
            margin,
            failure_window,
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
            fetches: AtomicU64::new(0),
        })
    }

    /// Tokens fetched so far.
    pub(crate) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn cached(&self) -> Option<Arc<AccessToken>> {
        let current = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        current
            .as_ref()
            .filter(|t| Instant::now() < t.refresh_at)
            .cloned()
    }

    /// A token good for a while yet: the cached one, or a fresh one (only
    /// one caller fetches; the others wait for it and share it).
    pub(crate) async fn get(&self) -> Result<Arc<AccessToken>, SendPushError> {
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        let mut state = self.refresh.lock().await;
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        if let Some((at, reason)) = &state.failed
            && at.elapsed() < self.failure_window
        {
            return Err(SendPushError::Unavailable {
                reason: reason.clone(),
                retry_after: Some(self.failure_window.saturating_sub(at.elapsed())),
            });
        }
        let fresh = match self.fetch().await {
            Ok(token) => {
                state.failed = None;
                Arc::new(token)
            }
            Err(e) => {
                state.failed = Some((Instant::now(), e.to_string()));
                return Err(e);
            }
        };
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(fresh.clone());
        Ok(fresh)
    }

    /// FCM refused `stale`: forget it, unless another caller already replaced it.
    pub(crate) fn invalidate(&self, stale: &Arc<AccessToken>) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, stale)) {
            *current = None;
        }
    }

    fn assertion(&self) -> Result<String, SendPushError> {
        let now = chrono::Utc::now().timestamp();
        let mut header = Header::new(Algorithm::RS256);
        header.kid.clone_from(&self.key_id);
        let claims = AssertionClaims {
            iss: &self.client_email,
            scope: self.scope,
            aud: &self.token_url,
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| SendPushError::Unknown(anyhow::anyhow!("cannot sign the assertion: {e}")))
    }

    async fn fetch(&self) -> Result<AccessToken, SendPushError> {
        let assertion = self.assertion()?;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", &assertion)
            .finish();
        let started = Instant::now();
        let res = self
            .http
            .post(&self.token_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| unavailable(format!("the OAuth2 token endpoint is unreachable: {e}")))?;
        let status = res.status();
        let bytes = crate::body::read_limited(res, MAX_TOKEN_RESPONSE_BYTES)
            .await
            .map_err(|e| unavailable(format!("reading the token endpoint's answer: {e}")))?;
        self.fetches.fetch_add(1, Ordering::Relaxed);
        if !status.is_success() {
            let why = serde_json::from_slice::<TokenError>(&bytes).ok();
            let (error, description) = why
                .map(|w| {
                    (
                        w.error.unwrap_or_default(),
                        w.error_description.unwrap_or_default(),
                    )
                })
                .unwrap_or_default();
            // A refused service account (revoked key, wrong clock) is an
            // operator's problem; the messages wait in the queue meanwhile.
            tracing::error!(
                status = status.as_u16(),
                %error,
                %description,
                client_email = %self.client_email,
                "the OAuth2 token endpoint refused the service account"
            );
            return Err(unavailable(format!(
                "the OAuth2 token endpoint answered {status}: {error} {description}"
            )));
        }
        let token: TokenResponse = serde_json::from_slice(&bytes)
            .map_err(|e| unavailable(format!("the token endpoint's answer does not parse: {e}")))?;
        let lifetime = Duration::from_secs(token.expires_in);
        // Refresh `margin` before expiry; a lifetime shorter than twice the
        // margin is used for half of it.
        let usable = if lifetime > self.margin * 2 {
            lifetime - self.margin
        } else {
            lifetime / 2
        };
        tracing::debug!(
            expires_in = token.expires_in,
            took_ms = started.elapsed().as_millis() as u64,
            "FCM access token fetched"
        );
        Ok(AccessToken {
            bearer: token.access_token,
            refresh_at: started + usable,
        })
    }
}

fn unavailable(reason: String) -> SendPushError {
    SendPushError::Unavailable {
        reason,
        retry_after: None,
    }
}

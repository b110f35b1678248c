//! Rate limits shared by every replica (counters in the `Cache`, i.e. Redis):
//! per user for authenticated requests, per client IP for the rest and for
//! failed authentication. Over the limit: 429 problem+json with `Retry-After`.
//!
//! If the counter store is unreachable the request is allowed (and a warning
//! logged): an outage of the limiter must not become an outage of the API.

use crate::problem::ApiError;
use actix_web::HttpRequest;
use ports::Cache;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// Requests per window per authenticated user (0: no limit).
    pub per_user: u32,
    /// Requests per window per client IP, for requests that are not (or not
    /// successfully) authenticated (0: no limit).
    pub per_ip: u32,
    pub window: Duration,
    /// Take the client IP from `Forwarded`/`X-Forwarded-For` (only behind a
    /// proxy that sets them; otherwise clients could pick their own IP).
    pub trust_forwarded_for: bool,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            per_user: 600,
            per_ip: 300,
            window: Duration::from_secs(60),
            trust_forwarded_for: false,
        }
    }
}

#[derive(Clone)]
pub struct RateLimiter {
    cache: Arc<dyn Cache>,
    settings: RateLimitSettings,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    pub fn new(cache: Arc<dyn Cache>, settings: RateLimitSettings) -> Self {
        Self { cache, settings }
    }

    async fn check(&self, scope: &'static str, key: &str, limit: u32) -> Result<(), ApiError> {
        if limit == 0 {
            return Ok(());
        }
        match self
            .cache
            .incr_window(&format!("rl:{scope}:{key}"), self.settings.window)
            .await
        {
            Ok((n, left)) if n > u64::from(limit) => {
                metrics::counter!("http_rate_limited_total", "scope" => scope).increment(1);
                Err(ApiError::RateLimited {
                    retry_after_secs: left.as_secs().max(1),
                })
            }
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "rate limiter unavailable; allowing the request");
                Ok(())
            }
        }
    }

    /// Counts a request of an authenticated user.
    pub async fn check_user(&self, uid: &str) -> Result<(), ApiError> {
        self.check("user", uid, self.settings.per_user).await
    }

    /// Counts a request from the client IP of `req`.
    pub async fn check_ip(&self, req: &HttpRequest) -> Result<(), ApiError> {
        let ip = {
            let info = req.connection_info();
            if self.settings.trust_forwarded_for {
                info.realip_remote_addr()
            } else {
                info.peer_addr()
            }
            .unwrap_or("unknown")
            .to_owned()
        };
        self.check("ip", &ip, self.settings.per_ip).await
    }
}

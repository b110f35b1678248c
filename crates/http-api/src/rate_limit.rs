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
    /// Take the client IP from the last `X-Forwarded-For` entry: the address
    /// the proxy in front of us (an ingress) saw. Entries before it are the
    /// client's own claims and are never used. Only behind such a proxy:
    /// without one, clients could pick their own IP.
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
                // Rounded up: a client that waits as told is let in.
                let secs = u64::try_from(left.as_millis().div_ceil(1000)).unwrap_or(u64::MAX);
                Err(ApiError::RateLimited {
                    retry_after_secs: secs.max(1),
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
        let ip = self.client_ip(req);
        self.check("ip", &ip, self.settings.per_ip).await
    }

    /// The client's address: the peer, or behind a trusted proxy the last
    /// `X-Forwarded-For` entry (which that proxy appended).
    fn client_ip(&self, req: &HttpRequest) -> String {
        if self.settings.trust_forwarded_for
            && let Some(ip) = last_forwarded_for(req)
        {
            return ip;
        }
        req.peer_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string())
    }
}

fn last_forwarded_for(req: &HttpRequest) -> Option<String> {
    let last = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .last()?;
    // An address, not whatever text a misconfigured proxy passed on.
    last.parse::<std::net::IpAddr>()
        .ok()
        .or_else(|| last.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .map(|ip| ip.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn limiter(trust: bool) -> RateLimiter {
        RateLimiter::new(
            Arc::new(ports::testing::InMemoryCache::new()),
            RateLimitSettings {
                trust_forwarded_for: trust,
                ..RateLimitSettings::default()
            },
        )
    }

    #[test]
    fn the_client_ip_is_the_last_forwarded_entry_only_behind_a_trusted_proxy() {
        let peer: std::net::SocketAddr = "10.0.0.7:5555".parse().unwrap();
        let req = TestRequest::get()
            .peer_addr(peer)
            .insert_header(("x-forwarded-for", "1.2.3.4, 203.0.113.9"))
            .to_http_request();
        assert_eq!(limiter(true).client_ip(&req), "203.0.113.9");
        assert_eq!(limiter(false).client_ip(&req), "10.0.0.7");
        let spoofed = TestRequest::get()
            .peer_addr(peer)
            .insert_header(("x-forwarded-for", "not-an-ip"))
            .to_http_request();
        assert_eq!(limiter(true).client_ip(&spoofed), "10.0.0.7");
    }
}

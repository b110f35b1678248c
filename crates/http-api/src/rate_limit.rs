//! Rate limits shared by every replica (counters in the `Cache`, i.e. Redis):
//! per user for authenticated requests, per client IP for the rest and for
//! failed authentication. Over the limit: 429 problem+json with `Retry-After`.
//!
//! If the counter store is unreachable the request is allowed (and a warning
//! logged): an outage of the limiter must not become an outage of the API.

use crate::problem::ApiError;
use actix_web::{HttpMessage as _, HttpRequest};
pub use domain::network::Cidr;
use ports::Cache;
use std::net::IpAddr;
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
    /// The proxies in front of us (an ingress, a load balancer). Only when
    /// the peer is one of them is `X-Forwarded-For` read: from its end,
    /// skipping entries that are themselves listed proxies, the first other
    /// address is the client. Entries before it are the client's own claims
    /// and are never used. Empty: the peer is the client.
    pub trusted_proxies: Vec<Cidr>,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            per_user: 600,
            per_ip: 300,
            window: Duration::from_secs(60),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Set on a request once it has been counted against its client's IP, so
/// the middleware does not count it again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CountedPerIp;

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

fn ip_key(bucket: &str) -> String {
    format!("rl:ip:{bucket}")
}

fn limited(scope: &'static str, left: Duration) -> ApiError {
    metrics::counter!("http_rate_limited_total", "scope" => scope).increment(1);
    // Rounded up: a client that waits as told is let in.
    let secs = u64::try_from(left.as_millis().div_ceil(1000)).unwrap_or(u64::MAX);
    ApiError::RateLimited {
        retry_after_secs: secs.max(1),
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
        match self.cache.incr_window(key, self.settings.window).await {
            Ok((n, left)) if n > u64::from(limit) => Err(limited(scope, left)),
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "rate limiter unavailable; allowing the request");
                Ok(())
            }
        }
    }

    /// Counts a request of an authenticated user.
    pub async fn check_user(&self, uid: &str) -> Result<(), ApiError> {
        self.check("user", &format!("rl:user:{uid}"), self.settings.per_user)
            .await
    }

    /// Counts a request from the client IP of `req`.
    pub async fn check_ip(&self, req: &HttpRequest) -> Result<(), ApiError> {
        req.extensions_mut().insert(CountedPerIp);
        let bucket = self.client_bucket(req);
        self.check("ip", &ip_key(&bucket), self.settings.per_ip)
            .await
    }

    /// Refuses, without counting, a client IP that has used up its budget
    /// of unauthenticated and failed requests: asked before a token costs a
    /// signature check, so a flood of forged tokens stops costing RSA
    /// verifications once its IP is over the limit.
    pub async fn refuse_exhausted_ip(&self, req: &HttpRequest) -> Result<(), ApiError> {
        if self.settings.per_ip == 0 {
            return Ok(());
        }
        let bucket = self.client_bucket(req);
        let count = match self.cache.get(&ip_key(&bucket)).await {
            Ok(value) => value
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0),
            Err(e) => {
                tracing::warn!(error = %e, "rate limiter unavailable; allowing the request");
                return Ok(());
            }
        };
        if count >= u64::from(self.settings.per_ip) {
            req.extensions_mut().insert(CountedPerIp);
            return Err(limited("ip", self.settings.window));
        }
        Ok(())
    }

    /// The bucket a client's requests count in (`domain::network`): its
    /// IPv4 address or its IPv6 /64, behind the trusted proxies.
    pub(crate) fn client_bucket(&self, req: &HttpRequest) -> String {
        domain::network::client_bucket(self.client_ip(req))
    }

    /// The client's address: the peer, or, when the peer is a trusted
    /// proxy, the last `X-Forwarded-For` entry that is not one.
    fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip();
        let forwarded = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok());
        Some(domain::network::client_ip(
            peer,
            forwarded,
            &self.settings.trusted_proxies,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn limiter(proxies: &[&str]) -> RateLimiter {
        RateLimiter::new(
            Arc::new(ports_testing::InMemoryCache::new()),
            RateLimitSettings {
                trusted_proxies: proxies.iter().map(|p| Cidr::parse(p).unwrap()).collect(),
                ..RateLimitSettings::default()
            },
        )
    }

    fn request(peer: &str, forwarded: Option<&str>) -> HttpRequest {
        let mut req = TestRequest::get().peer_addr(peer.parse().unwrap());
        if let Some(f) = forwarded {
            req = req.insert_header(("x-forwarded-for", f));
        }
        req.to_http_request()
    }

    #[test]
    fn forwarded_for_is_read_only_from_listed_proxies() {
        let req = request("10.0.0.7:5555", Some("1.2.3.4, 203.0.113.9"));
        assert_eq!(limiter(&["10.0.0.0/8"]).client_bucket(&req), "203.0.113.9");
        assert_eq!(limiter(&[]).client_bucket(&req), "10.0.0.7");
        assert_eq!(
            limiter(&["192.168.0.0/16"]).client_bucket(&req),
            "10.0.0.7",
            "a peer outside the list is the client, whatever it forwards"
        );
    }

    #[test]
    fn chained_proxies_are_skipped_and_the_clients_own_claims_never_used() {
        // client -> CDN (198.51.100.5, listed) -> ingress (10.0.0.7, listed)
        let req = request("10.0.0.7:5555", Some("6.6.6.6, 203.0.113.9, 198.51.100.5"));
        let l = limiter(&["10.0.0.0/8", "198.51.100.0/24"]);
        assert_eq!(l.client_bucket(&req), "203.0.113.9");
        let garbage = request("10.0.0.7:5555", Some("not-an-ip"));
        assert_eq!(l.client_bucket(&garbage), "10.0.0.7");
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64_and_mapped_ipv4_is_ipv4() {
        let l = limiter(&[]);
        let a = request("[2001:db8:1:2:aaaa::1]:1", None);
        let b = request("[2001:db8:1:2:ffff:ffff:ffff:ffff]:1", None);
        let other = request("[2001:db8:1:3::1]:1", None);
        assert_eq!(l.client_bucket(&a), "2001:db8:1:2::/64");
        assert_eq!(l.client_bucket(&a), l.client_bucket(&b));
        assert_ne!(l.client_bucket(&a), l.client_bucket(&other));
        let mapped = request("[::ffff:192.0.2.1]:1", None);
        assert_eq!(l.client_bucket(&mapped), "192.0.2.1");
    }

    #[actix_web::test]
    async fn an_exhausted_ip_is_refused_before_anything_is_counted() {
        let l = RateLimiter::new(
            Arc::new(ports_testing::InMemoryCache::new()),
            RateLimitSettings {
                per_ip: 2,
                ..RateLimitSettings::default()
            },
        );
        let req = request("192.0.2.1:1", None);
        assert!(l.refuse_exhausted_ip(&req).await.is_ok());
        l.check_ip(&req).await.unwrap();
        assert!(l.refuse_exhausted_ip(&req).await.is_ok());
        l.check_ip(&req).await.unwrap();
        assert!(matches!(
            l.refuse_exhausted_ip(&req).await,
            Err(ApiError::RateLimited { .. })
        ));
        let other = request("192.0.2.2:1", None);
        assert!(l.refuse_exhausted_ip(&other).await.is_ok());
    }
}

//! Rate limits, and which proxies' `X-Forwarded-For` is believed.

use super::reader::Reader;
use std::time::Duration;

pub(crate) const VARIABLES: &[&str] = &[
    "RATE_LIMIT_PER_USER",
    "RATE_LIMIT_PER_IP",
    "RATE_LIMIT_WINDOW_SECS",
    "TRUST_FORWARDED_FOR",
];

#[derive(Debug, Clone)]
pub struct RateLimitSection {
    /// Requests per window per user; 0 turns the limit off.
    pub per_user: u32,
    /// Requests per window per IP for unauthenticated requests; 0: off.
    pub per_ip: u32,
    pub window: Duration,
    /// The proxies whose `X-Forwarded-For` is believed (`TRUST_FORWARDED_FOR`).
    pub trusted_proxies: Vec<http_api::Cidr>,
}

impl RateLimitSection {
    pub(crate) fn read(r: &mut Reader<'_>) -> Self {
        let per_user = r.parsed("RATE_LIMIT_PER_USER", 600_u32, "a number of requests");
        let per_ip = r.parsed("RATE_LIMIT_PER_IP", 300_u32, "a number of requests");
        let window = r.seconds("RATE_LIMIT_WINDOW_SECS", 60, 1, 86_400);
        let off = ["0", "false", "no", "off"];
        let trusted_proxies = match r.raw("TRUST_FORWARDED_FOR") {
            None => Vec::new(),
            Some(v) if off.contains(&v.trim().to_ascii_lowercase().as_str()) => Vec::new(),
            Some(v) => parse_proxies(&v).unwrap_or_else(|e| {
                r.problem("TRUST_FORWARDED_FOR", e);
                Vec::new()
            }),
        };
        Self {
            per_user,
            per_ip,
            window,
            trusted_proxies,
        }
    }

    /// What the limiter takes.
    pub fn limiter_settings(&self) -> http_api::RateLimitSettings {
        http_api::RateLimitSettings {
            per_user: self.per_user,
            per_ip: self.per_ip,
            window: self.window,
            trusted_proxies: self.trusted_proxies.clone(),
        }
    }
}

/// The proxies' addresses as CIDRs, comma-separated (`10.0.0.0/8, fd00::/8`).
/// `true` is refused with a hint: trusting any peer lets every client name
/// its own address.
fn parse_proxies(raw: &str) -> Result<Vec<http_api::Cidr>, String> {
    if ["1", "true", "yes", "on"].contains(&raw.trim().to_ascii_lowercase().as_str()) {
        return Err(
            "takes the addresses of the proxies in front of the app as CIDRs (e.g. 10.0.0.0/8), not true: only their X-Forwarded-For is believed"
                .into(),
        );
    }
    let proxies: Result<Vec<_>, String> = raw
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(http_api::Cidr::parse)
        .collect();
    let proxies = proxies?;
    if proxies.is_empty() {
        return Err("lists no proxy".into());
    }
    Ok(proxies)
}

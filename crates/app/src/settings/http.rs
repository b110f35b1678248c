//! The HTTP listeners: where they listen, what bodies and origins they
//! take, and the secret that signs pagination cursors.

use super::AppEnv;
use super::reader::Reader;
use secrecy::{ExposeSecret as _, SecretString};
use std::net::SocketAddr;

pub(crate) const VARIABLES: &[&str] = &[
    "HTTP_HOST",
    "HTTP_PORT",
    "CORS_ALLOWED_ORIGINS",
    "HTTP_JSON_LIMIT_BYTES",
    "CURSOR_SECRET",
    "METRICS_ADDR",
    "MIN_APP_VERSION_IOS",
    "MIN_APP_VERSION_ANDROID",
    "MIN_APP_VERSION_WEB",
    "APP_STORE_URL_IOS",
    "APP_STORE_URL_ANDROID",
    "APP_STORE_URL_WEB",
    "REQUIRE_APP_VERSION",
];

/// Where local mode keeps its cursor secret when `CURSOR_SECRET` is not
/// set: random per checkout, made on first use.
pub const LOCAL_CURSOR_SECRET_FILE: &str = "var/cursor-secret";

/// Secrets are `SecretString`s: their `Debug` prints `[REDACTED]`.
#[derive(Clone, Debug)]
pub struct HttpSection {
    pub host: String,
    pub port: u16,
    pub cors_allowed_origins: Vec<String>,
    pub json_limit_bytes: usize,
    /// Signs pagination cursors; also keys the welcome ledger's digests of
    /// addresses.
    pub cursor_secret: SecretString,
    /// Whether `CURSOR_SECRET` was set (otherwise local mode takes the
    /// checkout's own, or a random one per process).
    pub(crate) cursor_secret_set: bool,
    /// Where `/metrics` is served instead of the public listener
    /// (`METRICS_ADDR`); `None`: on the public listener.
    pub metrics_addr: Option<SocketAddr>,
    /// The oldest app versions served (`MIN_APP_VERSION_*`), where to get
    /// a newer one (`APP_STORE_URL_*`), and `REQUIRE_APP_VERSION`.
    pub app_versions: domain::AppVersionPolicy,
}

impl HttpSection {
    pub(crate) fn read(r: &mut Reader<'_>, env: AppEnv) -> Self {
        let app_versions = read_app_versions(r);
        let host = r.string("HTTP_HOST", "0.0.0.0");
        let port = r.parsed("HTTP_PORT", 8080_u16, "a port number 0-65535");
        let cors_allowed_origins = r
            .raw("CORS_ALLOWED_ORIGINS")
            .map(|v| match parse_origins(&v) {
                Ok(origins) => origins,
                Err(e) => {
                    r.problem("CORS_ALLOWED_ORIGINS", e);
                    Vec::new()
                }
            })
            .unwrap_or_default();
        let json_limit_bytes = r.ranged(
            "HTTP_JSON_LIMIT_BYTES",
            64 * 1024_usize,
            1024,
            64 * 1024 * 1024,
            "bytes",
        );
        let cursor_secret: SecretString = match r.raw("CURSOR_SECRET") {
            Some(s) if s.len() >= 16 => s.into(),
            Some(_) => {
                r.problem("CURSOR_SECRET", "must be at least 16 characters");
                SecretString::default()
            }
            // Random per process until `Settings::from_env` puts the
            // checkout's own (kept under var/) in its place.
            None if env == AppEnv::Local => format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            )
            .into(),
            None => {
                r.problem(
                    "CURSOR_SECRET",
                    "is required when APP_ENV=production (signs pagination cursors)",
                );
                SecretString::default()
            }
        };
        let cursor_secret_set = r.raw("CURSOR_SECRET").is_some();
        let metrics_addr = r.raw("METRICS_ADDR").and_then(|v| {
            v.trim()
                .parse::<SocketAddr>()
                .map_err(|_| {
                    r.problem(
                        "METRICS_ADDR",
                        format!("must be an address and port like 0.0.0.0:9090 (got {v:?})"),
                    );
                })
                .ok()
        });
        Self {
            host,
            port,
            cors_allowed_origins,
            json_limit_bytes,
            cursor_secret,
            cursor_secret_set,
            metrics_addr,
            app_versions,
        }
    }

    /// What `http-api` takes.
    pub fn http_settings(&self) -> http_api::HttpSettings {
        http_api::HttpSettings {
            json_limit: self.json_limit_bytes,
            cors_origins: self.cors_allowed_origins.clone(),
            app_versions: std::sync::Arc::new(self.app_versions.clone()),
        }
    }

    /// The codec of pagination cursors.
    pub fn cursor_codec(&self) -> domain::CursorCodec {
        domain::CursorCodec::new(self.cursor_secret.expose_secret().as_bytes().to_vec())
    }
}

/// `MIN_APP_VERSION_{IOS,ANDROID,WEB}` (versions like `2.4.0`),
/// `APP_STORE_URL_*` (https URLs) and `REQUIRE_APP_VERSION`.
fn read_app_versions(r: &mut Reader<'_>) -> domain::AppVersionPolicy {
    let mut version = |var: &str| {
        let raw = r.raw(var)?.trim().to_owned();
        if raw.is_empty() {
            return None;
        }
        match raw.parse::<domain::AppVersion>() {
            Ok(v) => Some(v),
            Err(_) => {
                r.problem(var, format!("must be a version like 2.4.0 (got {raw:?})"));
                None
            }
        }
    };
    let (min_ios, min_android, min_web) = (
        version("MIN_APP_VERSION_IOS"),
        version("MIN_APP_VERSION_ANDROID"),
        version("MIN_APP_VERSION_WEB"),
    );
    let mut store = |var: &str| {
        r.raw(var)
            .filter(|v| !v.trim().is_empty())
            .map(|_| r.url(var, "", &["https"]))
    };
    let (store_url_ios, store_url_android, store_url_web) = (
        store("APP_STORE_URL_IOS"),
        store("APP_STORE_URL_ANDROID"),
        store("APP_STORE_URL_WEB"),
    );
    domain::AppVersionPolicy {
        min_ios,
        min_android,
        min_web,
        store_url_ios,
        store_url_android,
        store_url_web,
        require: r.bool("REQUIRE_APP_VERSION", false),
    }
}

/// `*`, or a comma-separated list of origins (`https://app.example.com`,
/// `http://localhost:3000`): a scheme, a host and maybe a port, nothing more.
fn parse_origins(raw: &str) -> Result<Vec<String>, String> {
    let items: Vec<&str> = raw
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .collect();
    if items.contains(&"*") {
        return if items.len() == 1 {
            Ok(vec!["*".into()])
        } else {
            Err("must be * alone or a list of origins, not both".into())
        };
    }
    items
        .into_iter()
        .map(|o| {
            let origin = url::Url::parse(o)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
                .map(|u| u.origin().ascii_serialization());
            match origin {
                Some(origin) if origin == o.trim_end_matches('/') => Ok(origin),
                _ => Err(format!(
                    "{o:?} is not an origin like https://app.example.com (scheme, host, optional port)"
                )),
            }
        })
        .collect()
}

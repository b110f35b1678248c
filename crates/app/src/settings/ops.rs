//! The ops console: who gets in, and where it listens.

use super::AppEnv;
use super::reader::Reader;
use std::net::SocketAddr;
use std::time::Duration;

pub(crate) const VARIABLES: &[&str] = &[
    "OPS_PASSWORD_HASH",
    "OPS_VIEWER_PASSWORD_HASH",
    "OPS_SESSION_SECRET",
    "OPS_SESSION_HOURS",
    "OPS_ADMIN_CLAIM",
    "OPS_ADDR",
];

/// How the console is served.
#[derive(Clone)]
pub struct OpsSection {
    /// `None`: not served (production without an operator password).
    pub access: Option<ops_console::Access>,
    /// Its own listener (`OPS_ADDR`); `None`: under `/ops` on the API's.
    pub addr: Option<SocketAddr>,
    /// The custom claim of a Firebase ID token that makes an operator
    /// (`OPS_ADMIN_CLAIM`); the app's token verifier checks the token.
    pub token_claim: Option<String>,
}

/// The hashes and the session key are never printed.
impl std::fmt::Debug for OpsSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsSection")
            .field("served", &self.access.is_some())
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl OpsSection {
    pub(crate) fn read(r: &mut Reader<'_>, env: AppEnv) -> Self {
        let mut passwords = Vec::new();
        for (var, role) in [
            ("OPS_PASSWORD_HASH", ops_console::Role::Admin),
            ("OPS_VIEWER_PASSWORD_HASH", ops_console::Role::Viewer),
        ] {
            if let Some(hash) = r.raw(var).map(|h| h.trim().to_owned()) {
                if ops_console::is_password_hash(&hash) {
                    passwords.push((role, hash));
                } else {
                    r.problem(
                        var,
                        "must be an argon2 hash ($argon2id$...): `app ops-password` prints one",
                    );
                }
            }
        }
        let hours = r.parsed("OPS_SESSION_HOURS", 8_u64, "a number of hours");
        let secret = r.raw("OPS_SESSION_SECRET");
        let token_claim = r
            .raw("OPS_ADMIN_CLAIM")
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty());
        let access = if passwords.is_empty() && token_claim.is_none() {
            // Without a password: on a developer's machine, loopback only;
            // in production, not served at all.
            (env == AppEnv::Local).then_some(ops_console::Access::Loopback)
        } else {
            match secret.filter(|s| s.len() >= 32) {
                Some(secret) => Some(ops_console::Access::SignIn(ops_console::SignIn {
                    passwords,
                    session_key: secret.into_bytes(),
                    session_ttl: Duration::from_secs(hours.clamp(1, 24 * 30) * 3600),
                    secure_cookies: env == AppEnv::Production,
                    // Filled in by the app with its token verifier.
                    token: None,
                })),
                None => {
                    r.problem(
                        "OPS_SESSION_SECRET",
                        "is required (at least 32 characters, the same on every instance) when an OPS_*PASSWORD_HASH or OPS_ADMIN_CLAIM is set",
                    );
                    None
                }
            }
        };
        let addr = r.raw("OPS_ADDR").and_then(|v| {
            v.trim()
                .parse::<SocketAddr>()
                .map_err(|_| {
                    r.problem(
                        "OPS_ADDR",
                        format!("must be an address and port like 127.0.0.1:9091 (got {v:?})"),
                    );
                })
                .ok()
        });
        Self {
            access,
            addr,
            token_claim,
        }
    }
}

//! Firebase ID tokens: the project, where its keys are, and the local-only
//! ways in (the Auth emulator, dev tokens).

use super::AppEnv;
use super::reader::Reader;
use secrecy::{ExposeSecret as _, SecretString};

pub(crate) const VARIABLES: &[&str] = &[
    "FIREBASE_PROJECT_ID",
    "FIREBASE_AUTH_EMULATOR_HOST",
    "FIREBASE_KEYS_URL",
    "IDENTITY_TOOLKIT_URL",
    "DEV_TOKEN_SECRET",
];

pub const LOCAL_PROJECT_ID: &str = "trellis-local";
/// Where local mode keeps its dev-token secret when `DEV_TOKEN_SECRET` is
/// unset: random, made on first use, private to this checkout (so no
/// well-known secret ever signs tokens a reachable server accepts).
pub const LOCAL_DEV_TOKEN_SECRET_FILE: &str = "var/dev-token-secret";
const GOOGLE_X509_URL: &str =
    "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com";

/// Secrets are `SecretString`s: their `Debug` prints `[REDACTED]`.
#[derive(Clone, Debug)]
pub struct AuthSection {
    pub firebase_project_id: String,
    pub firebase_auth_emulator_host: Option<String>,
    pub firebase_keys_url: String,
    /// Where Firebase Auth users are deleted (the Identity Toolkit API).
    pub identity_toolkit_url: String,
    /// Local mode only; never printed.
    pub dev_token_secret: Option<SecretString>,
}

/// The URL schemes production accepts for what tokens and pushes travel
/// to: https only; local mode may point them at a local stand-in.
pub(crate) fn secure_schemes(env: AppEnv) -> &'static [&'static str] {
    match env {
        AppEnv::Local => &["https", "http"],
        AppEnv::Production => &["https"],
    }
}

impl AuthSection {
    pub(crate) fn read(r: &mut Reader<'_>, env: AppEnv) -> Self {
        let local = env == AppEnv::Local;
        let firebase_project_id = match r.raw("FIREBASE_PROJECT_ID") {
            Some(p) => p.trim().to_owned(),
            None if local => LOCAL_PROJECT_ID.to_owned(),
            None => {
                r.problem("FIREBASE_PROJECT_ID", "is required when APP_ENV=production");
                String::new()
            }
        };
        let firebase_auth_emulator_host = r.raw("FIREBASE_AUTH_EMULATOR_HOST");
        if firebase_auth_emulator_host.is_some() && !local {
            r.problem(
                "FIREBASE_AUTH_EMULATOR_HOST",
                "must not be set when APP_ENV=production (emulator tokens are unsigned)",
            );
        }
        // Keys fetched over plain HTTP could be swapped on the way.
        let firebase_keys_url = r.url("FIREBASE_KEYS_URL", GOOGLE_X509_URL, secure_schemes(env));
        let identity_toolkit_url = r.url(
            "IDENTITY_TOOLKIT_URL",
            push_adapter::IDENTITY_TOOLKIT_URL,
            secure_schemes(env),
        );
        // Local mode with no secret set: `from_env` uses the checkout's own.
        let dev_token_secret = r.raw("DEV_TOKEN_SECRET").filter(|_| local);
        if let Some(secret) = &dev_token_secret
            && secret.len() < 16
        {
            r.problem("DEV_TOKEN_SECRET", "must be at least 16 characters");
        }
        let dev_token_secret = dev_token_secret.map(SecretString::from);
        Self {
            firebase_project_id,
            firebase_auth_emulator_host,
            firebase_keys_url,
            identity_toolkit_url,
            dev_token_secret,
        }
    }

    /// What the verifier takes. Dev tokens and the emulator only in local
    /// mode, whatever these settings say (so settings built by hand cannot
    /// turn them on in production either).
    pub fn auth_settings(&self, env: AppEnv) -> auth_adapter::AuthSettings {
        let local = env == AppEnv::Local;
        let mut auth = auth_adapter::AuthSettings::new(self.firebase_project_id.clone());
        auth.keys = auth_adapter::KeySettings::new(self.firebase_keys_url.clone());
        auth.emulator = local && self.firebase_auth_emulator_host.is_some();
        auth.dev_secret = self
            .dev_token_secret
            .as_ref()
            .filter(|_| local)
            .map(|s| s.expose_secret().to_owned());
        auth
    }
}

/// Reads a checkout's secret at `path` (the dev-token secret, the cursor
/// secret), making a random one on first use (readable by its owner only).
pub fn checkout_secret(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Write as _;
    let read = || {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| s.len() >= 32)
    };
    if let Some(existing) = read() {
        return Ok(existing);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(&tmp)?.write_all(secret.as_bytes())?;
    }
    // Linking fails if the file exists: two processes starting at once
    // both end up with whichever secret was linked first.
    let linked = std::fs::hard_link(&tmp, path);
    if linked.is_ok() {
        let _ = std::fs::remove_file(&tmp);
        return Ok(secret);
    }
    if let Some(existing) = read() {
        let _ = std::fs::remove_file(&tmp);
        return Ok(existing);
    }
    // A file too short to be a secret (hand-edited, truncated): replace it.
    std::fs::rename(&tmp, path)?;
    Ok(secret)
}

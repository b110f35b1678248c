//! Typed settings from the environment (and an optional `.env`), one
//! section per concern, each reading its own variables and building its
//! adapter's settings. Every problem is collected and reported at once;
//! no value that may hold a secret is echoed; nothing else reads the
//! environment.
//!
//! # Layout
//!
//! - `reader.rs`: [`Reader`] (collects problems) and [`SettingsError`].
//! - this file: the process itself (mode, instance id, logs, shutdown).
//! - one file per concern: `http`, `database`, `redis`, `auth`, `mail`,
//!   `push`, `storage`, `worker` (jobs and stream consumers), `ws`,
//!   `rate_limit`.
//!
//! A new variable goes in its section's `read` and `VARIABLES`; a test
//! checks that every variable read is listed and every listed one read.

mod auth;
mod database;
mod http;
mod mail;
mod ops;
mod push;
mod rate_limit;
mod reader;
mod redis;
mod storage;
mod worker;
mod ws;

pub use auth::{AuthSection, LOCAL_DEV_TOKEN_SECRET_FILE, LOCAL_PROJECT_ID, checkout_secret};
pub use database::{ConnectionBudget, DEFAULT_DATABASE_URL, DatabaseSection};
pub use http::{HttpSection, LOCAL_CURSOR_SECRET_FILE};
pub use mail::MailSection;
pub use ops::OpsSection;
pub use push::PushSection;
pub use rate_limit::RateLimitSection;
pub use reader::SettingsError;
pub use redis::RedisBudget;
pub use redis::{DEFAULT_REDIS_URL, RedisSection};
pub use storage::StorageSection;
pub use worker::WorkerSection;
pub use ws::WsSection;

use reader::Reader;
use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

/// `local` (dev tokens accepted, database created if missing, migrations
/// on start, the ops console open on loopback) or `production` (none of
/// that; more is required). A process whose `APP_ENV` is unset runs as
/// `production`: a server whose mode was forgotten opens nothing. The
/// developer commands (`scripts/dev run`, `just run`) say `local`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Local,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Everything the process is configured with.
#[derive(Clone)]
pub struct Settings {
    pub env: AppEnv,
    /// Unique per replica: consumer names, worker ids, fan-out origin.
    pub instance_id: String,
    pub log_format: LogFormat,
    pub shutdown_timeout: Duration,
    /// After SIGTERM, how long `serve`/`all` keep accepting and serving
    /// while `/readyz` answers 503, before the listener closes
    /// (`SHUTDOWN_DRAIN_MS`, default 0). For load balancers that learn of a
    /// stop only from readiness; Kubernetes' preStop sleep does the same job.
    pub shutdown_drain: Duration,
    pub migrate_on_start: bool,
    pub http: HttpSection,
    pub database: DatabaseSection,
    pub redis: RedisSection,
    pub auth: AuthSection,
    pub mail: MailSection,
    pub push: PushSection,
    pub storage: StorageSection,
    pub worker: WorkerSection,
    pub ws: WsSection,
    pub rate_limit: RateLimitSection,
    pub ops: OpsSection,
}

impl fmt::Debug for Settings {
    /// Secrets and URLs with credentials are not printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("env", &self.env)
            .field("http_port", &self.http.port)
            .field("firebase_project_id", &self.auth.firebase_project_id)
            .field("emulator", &self.auth.firebase_auth_emulator_host)
            .field("smtp", &self.mail.smtp_url.is_some())
            .field("instance_id", &self.instance_id)
            .finish_non_exhaustive()
    }
}

/// The process's own variables (the sections list theirs).
const PROCESS_VARIABLES: &[&str] = &[
    "APP_ENV",
    "INSTANCE_ID",
    "POD_NAME",
    "LOG_FORMAT",
    "RUST_LOG",
    "SHUTDOWN_TIMEOUT_SECS",
    "SHUTDOWN_DRAIN_MS",
    "MIGRATE_ON_START",
];

/// Every variable the app reads, for documentation and for the deploy-file
/// check (a variable a manifest sets must be one of these).
pub static KNOWN_VARIABLES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    [
        PROCESS_VARIABLES,
        http::VARIABLES,
        database::VARIABLES,
        redis::VARIABLES,
        auth::VARIABLES,
        mail::VARIABLES,
        push::VARIABLES,
        storage::VARIABLES,
        worker::VARIABLES,
        ws::VARIABLES,
        rate_limit::VARIABLES,
        ops::VARIABLES,
    ]
    .concat()
});

fn default_instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "trellis".into());
    format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

impl Settings {
    /// Reads the process environment (after loading `.env` if present).
    pub fn from_env() -> Result<Self, SettingsError> {
        // A missing .env is normal; a malformed one is reported by dotenvy.
        if let Err(e) = dotenvy::dotenv()
            && !e.not_found()
        {
            return Err(SettingsError {
                problems: vec![(".env".into(), format!("cannot be read: {e}"))],
            });
        }
        Self::from_lookup(&|var| std::env::var(var).ok())?.with_checkout_secrets()
    }

    /// Like [`Settings::from_env`], for a developer's own tools (`app
    /// dev-token`): an unset `APP_ENV` means `local` here, never for a
    /// server.
    pub fn from_env_for_tools() -> Result<Self, SettingsError> {
        if let Err(e) = dotenvy::dotenv()
            && !e.not_found()
        {
            return Err(SettingsError {
                problems: vec![(".env".into(), format!("cannot be read: {e}"))],
            });
        }
        Self::from_lookup(&|var| {
            std::env::var(var)
                .ok()
                .or_else(|| (var == "APP_ENV").then(|| "local".to_owned()))
        })?
        .with_checkout_secrets()
    }

    /// In local mode, the secrets not set are this checkout's own: random,
    /// made on first use under `var/` and kept (so `serve`, `worker` and
    /// `dev-token` of one checkout agree). No constant signs anything.
    fn with_checkout_secrets(mut self) -> Result<Self, SettingsError> {
        if self.env != AppEnv::Local {
            return Ok(self);
        }
        let from_file = |var: &str, file: &str| {
            let path = std::path::Path::new(file);
            checkout_secret(path).map_err(|e| SettingsError {
                problems: vec![(
                    var.into(),
                    format!("is not set and {} cannot be made: {e}", path.display()),
                )],
            })
        };
        if self.auth.dev_token_secret.is_none() {
            self.auth.dev_token_secret =
                Some(from_file("DEV_TOKEN_SECRET", LOCAL_DEV_TOKEN_SECRET_FILE)?.into());
        }
        if !self.http.cursor_secret_set {
            self.http.cursor_secret = from_file("CURSOR_SECRET", LOCAL_CURSOR_SECRET_FILE)?.into();
        }
        Ok(self)
    }

    /// Reads settings through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let mut r = Reader::new(lookup);
        let app_env_set = r.raw("APP_ENV").is_some();
        let env = match r
            .string("APP_ENV", "production")
            .to_ascii_lowercase()
            .as_str()
        {
            "local" | "development" | "dev" => AppEnv::Local,
            "production" | "prod" => AppEnv::Production,
            other => {
                r.problem(
                    "APP_ENV",
                    format!("must be local or production (got {other:?})"),
                );
                AppEnv::Local
            }
        };
        let http = HttpSection::read(&mut r, env);
        let database = DatabaseSection::read(&mut r);
        let redis = RedisSection::read(&mut r);
        let auth = AuthSection::read(&mut r, env);
        let mail = MailSection::read(&mut r);
        let push = PushSection::read(&mut r, env);
        let storage = StorageSection::read(&mut r);
        if let Some(filter) = r.raw("RUST_LOG")
            && tracing_subscriber::EnvFilter::try_new(&filter).is_err()
        {
            r.problem(
                "RUST_LOG",
                format!(
                    "is not a log filter like \"info\" or \"info,http_api=debug\" (got {filter:?})"
                ),
            );
        }
        let log_format = match r
            .string("LOG_FORMAT", "pretty")
            .to_ascii_lowercase()
            .as_str()
        {
            "pretty" | "text" => LogFormat::Pretty,
            "json" => LogFormat::Json,
            other => {
                r.problem(
                    "LOG_FORMAT",
                    format!("must be pretty or json (got {other:?})"),
                );
                LogFormat::Pretty
            }
        };
        let shutdown_timeout = r.seconds("SHUTDOWN_TIMEOUT_SECS", 20, 0, 3600);
        let shutdown_drain = r.millis("SHUTDOWN_DRAIN_MS", 0, 0, 60_000);
        let migrate_on_start = r.bool("MIGRATE_ON_START", env == AppEnv::Local);
        let instance_id = r
            .raw("INSTANCE_ID")
            .or_else(|| r.raw("POD_NAME"))
            .unwrap_or_else(default_instance_id);
        let worker = WorkerSection::read(&mut r);
        let ws = WsSection::read(&mut r);
        let rate_limit = RateLimitSection::read(&mut r);
        let ops = OpsSection::read(&mut r, env);

        if !r.problems.is_empty() {
            let mut problems = r.problems;
            if env == AppEnv::Production && !app_env_set {
                problems.push((
                    "APP_ENV".into(),
                    "is not set, so production's rules apply; on a developer's machine set APP_ENV=local (scripts/dev run does)".into(),
                ));
            }
            return Err(SettingsError { problems });
        }
        Ok(Self {
            env,
            instance_id,
            log_format,
            shutdown_timeout,
            shutdown_drain,
            migrate_on_start,
            http,
            database,
            redis,
            auth,
            mail,
            push,
            storage,
            worker,
            ws,
            rate_limit,
            ops,
        })
    }
}

#[cfg(test)]
mod tests;

//! `spawn_app()`: the whole application in-process on port 0, with its own
//! Postgres schema and Redis key prefix.

use crate::{TestDb, TestRedis, unique_suffix};
use app::{Application, Role, Settings};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A running application and the isolated resources it uses. Stops on drop.
#[derive(Debug)]
pub struct TestApp {
    pub address: String,
    pub port: u16,
    /// `/metrics`' own port, when the test set `METRICS_ADDR`.
    pub metrics_port: Option<u16>,
    /// The ops console's own port, when the test set `OPS_ADDR`.
    pub ops_port: Option<u16>,
    pub settings: Settings,
    pub client: reqwest::Client,
    pub db: Arc<TestDb>,
    pub redis: Arc<TestRedis>,
    pub mail_dir: PathBuf,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// The dev-token secret of every test app (and of app processes tests
/// start: pass it as `DEV_TOKEN_SECRET`).
pub const TEST_DEV_TOKEN_SECRET: &str = "trellis-test-dev-token-secret";

/// Settings for a test app: local mode, port 0, this test's schema and prefix.
pub fn test_settings(db: &TestDb, redis: &TestRedis, overrides: &[(&str, &str)]) -> Settings {
    let mail_dir = std::env::temp_dir().join(format!("trellis-mail-{}", unique_suffix()));
    let storage_dir = std::env::temp_dir().join(format!("trellis-storage-{}", unique_suffix()));
    let mut vars: HashMap<String, String> = [
        ("APP_ENV", "local".to_owned()),
        ("DEV_TOKEN_SECRET", TEST_DEV_TOKEN_SECRET.to_owned()),
        ("HTTP_HOST", "127.0.0.1".to_owned()),
        ("HTTP_PORT", "0".to_owned()),
        ("DATABASE_URL", db.url().to_owned()),
        ("DATABASE_MAX_CONNECTIONS", "8".to_owned()),
        ("REDIS_URL", redis.url().to_owned()),
        ("REDIS_KEY_PREFIX", redis.prefix().to_owned()),
        ("MIGRATE_ON_START", "false".to_owned()),
        ("SHUTDOWN_TIMEOUT_SECS", "5".to_owned()),
        ("MAIL_OUTBOX_DIR", mail_dir.display().to_string()),
        ("STORAGE_LOCAL_DIR", storage_dir.display().to_string()),
        ("INSTANCE_ID", format!("test-{}", unique_suffix())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in overrides {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    Settings::from_lookup(&move |k| vars.get(k).cloned()).unwrap_or_else(|e| panic!("{e}"))
}

/// The whole app (`all` role) with default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(Role::All, &[]).await
}

/// The app in `role`, with some settings overridden (`("SMTP_URL", ..)`).
pub async fn spawn_app_with(role: Role, overrides: &[(&str, &str)]) -> TestApp {
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    spawn_app_on(db, redis, role, overrides).await
}

/// The app on resources the caller prepared (to run two instances on one
/// database and prefix, say).
pub async fn spawn_app_on(
    db: TestDb,
    redis: TestRedis,
    role: Role,
    overrides: &[(&str, &str)],
) -> TestApp {
    spawn_shared(Arc::new(db), Arc::new(redis), role, overrides).await
}

/// Another instance on the same database and Redis prefix as `first` (a
/// second replica), with its own port and instance id.
pub async fn spawn_sibling(first: &TestApp, role: Role, overrides: &[(&str, &str)]) -> TestApp {
    spawn_shared(first.db.clone(), first.redis.clone(), role, overrides).await
}

async fn spawn_shared(
    db: Arc<TestDb>,
    redis: Arc<TestRedis>,
    role: Role,
    overrides: &[(&str, &str)],
) -> TestApp {
    crate::init_tracing();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let settings = test_settings(&db, &redis, overrides);
    let mail_dir = settings.mail.file_dir.clone();
    let app = Application::build(settings.clone(), role)
        .await
        .unwrap_or_else(|e| panic!("the app did not start: {e:#}"));
    let port = app.port().unwrap_or(0);
    let metrics_port = app.metrics_port();
    let ops_port = app.ops_port();
    let shutdown = app.shutdown_token();
    let handle = tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        metrics_port,
        ops_port,
        settings,
        client: reqwest::Client::new(),
        db,
        redis,
        mail_dir,
        shutdown,
        handle: Some(handle),
    }
}

impl TestApp {
    /// A dev token for `uid` that this app accepts.
    pub fn token(&self, uid: &str) -> String {
        self.token_with(uid, None, None)
    }

    pub fn token_with(&self, uid: &str, email: Option<&str>, name: Option<&str>) -> String {
        let secret = self
            .settings
            .auth
            .dev_token_secret
            .as_ref()
            .map(secrecy::ExposeSecret::expose_secret)
            .expect("test apps run in local mode");
        let req = auth_adapter::DevTokenRequest {
            uid: uid.to_owned(),
            email: email.map(str::to_owned),
            email_verified: true,
            name: name.map(str::to_owned),
            ttl: std::time::Duration::from_secs(3600),
            claims: serde_json::Map::new(),
        };
        auth_adapter::mint_dev_token(secret, &self.settings.auth.firebase_project_id, &req)
            .expect("minting a dev token")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    async fn json_of(res: reqwest::Response) -> (reqwest::StatusCode, serde_json::Value) {
        let status = res.status();
        (status, res.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// `PATCH /api/v1/me` with `body`: the status and the JSON answer
    /// (`Null` when it is not JSON).
    pub async fn patch_me(
        &self,
        token: &str,
        body: &serde_json::Value,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let res = self
            .client
            .patch(self.url("/api/v1/me"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("PATCH /api/v1/me");
        Self::json_of(res).await
    }

    /// `GET /api/v1/me`: the status and the JSON answer.
    pub async fn get_me(&self, token: &str) -> (reqwest::StatusCode, serde_json::Value) {
        let res = self
            .client
            .get(self.url("/api/v1/me"))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET /api/v1/me");
        Self::json_of(res).await
    }

    /// `DELETE /api/v1/me`: the status.
    pub async fn delete_me(&self, token: &str) -> reqwest::StatusCode {
        self.client
            .delete(self.url("/api/v1/me"))
            .bearer_auth(token)
            .send()
            .await
            .expect("DELETE /api/v1/me")
            .status()
    }

    /// `/metrics` as text (from `METRICS_ADDR`'s listener when it has one).
    pub async fn metrics(&self) -> String {
        let url = match self.metrics_port {
            Some(port) => format!("http://127.0.0.1:{port}/metrics"),
            None => self.url("/metrics"),
        };
        self.client
            .get(url)
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("the metrics text")
    }

    /// Starts a [`MetricsWindow`] on this app's metrics.
    pub async fn metrics_window(&self) -> MetricsWindow {
        let guard = METRICS_LOCK.lock().await;
        MetricsWindow {
            _exclusive: guard,
            before: self.metrics().await,
        }
    }

    /// Stops the app gracefully and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.handle.take() {
            Some(h) => h.await?,
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.mail_dir);
    }
}

/// One Prometheus recorder serves a whole process, and under `cargo test`
/// the tests of one binary share a process (nextest gives each its own).
static METRICS_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Exact counts for one test: while it is held no other test of this
/// process that takes one runs, and [`since`](Self::since) reads how much a
/// sample grew from when it was taken. Take it before the work to count,
/// in every test of a binary that changes the counts another asserts.
#[derive(Debug)]
pub struct MetricsWindow {
    _exclusive: tokio::sync::MutexGuard<'static, ()>,
    before: String,
}

/// The value of the first sample whose line starts with `line_start`.
pub fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

impl MetricsWindow {
    /// How much the sample at `line_start` grew since the window opened
    /// (`None` when the app does not report it at all).
    pub async fn since(&self, app: &TestApp, line_start: &str) -> Option<f64> {
        let now = sample(&app.metrics().await, line_start)?;
        Some(now - sample(&self.before, line_start).unwrap_or(0.0))
    }
}

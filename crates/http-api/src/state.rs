//! What the handlers share.

use crate::readiness::Readiness;
use ports::TokenVerifier;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use usecases::{ProfileService, PushNotifications, PushTokenService};

/// Renders the Prometheus text exposition for `/metrics`.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// HTTP-level settings.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Largest JSON body accepted, in bytes (413 above it).
    pub json_limit: usize,
    /// Origins allowed by CORS; empty turns CORS off.
    pub cors_origins: Vec<String>,
    /// The oldest app versions served (see `app_version`).
    pub app_versions: std::sync::Arc<domain::AppVersionPolicy>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            json_limit: 64 * 1024,
            cors_origins: Vec::new(),
            app_versions: std::sync::Arc::default(),
        }
    }
}

/// What the operational routes (`/healthz`, `/readyz`, `/metrics`) need;
/// every process role serves them.
#[derive(Clone)]
pub struct OpsState {
    /// The dependencies' state, checked at most once a second whatever the
    /// number of callers.
    pub readiness: Readiness,
    /// `None` on a listener that does not serve `/metrics` (404): with
    /// `METRICS_ADDR` set it has a listener of its own.
    pub metrics: Option<MetricsRenderer>,
    /// Set when the process has begun a graceful stop: `/readyz` answers 503
    /// `shutting_down` while requests are still served, so load balancers
    /// move traffic away before the listener closes.
    pub draining: Arc<AtomicBool>,
}

impl OpsState {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for OpsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsState")
            .field("readiness", &self.readiness)
            .finish_non_exhaustive()
    }
}

/// The application state every API handler can reach.
#[derive(Clone)]
pub struct ApiState {
    pub profiles: ProfileService,
    /// The user's data export.
    pub data: usecases::UserData,
    pub push_tokens: PushTokenService,
    pub push: PushNotifications,
    /// Presigned uploads to the object store.
    pub uploads: usecases::UploadService,
    pub verifier: Arc<dyn TokenVerifier>,
    pub ops: OpsState,
    pub settings: HttpSettings,
    /// `None`: no rate limits.
    pub rate_limiter: Option<crate::RateLimiter>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

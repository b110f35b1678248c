//! What the handlers share.

use ports::{HealthProbe, TokenVerifier};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
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
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            json_limit: 64 * 1024,
            cors_origins: Vec::new(),
        }
    }
}

/// What the operational routes (`/healthz`, `/readyz`, `/metrics`) need;
/// every process role serves them.
#[derive(Clone)]
pub struct OpsState {
    pub probes: Vec<Arc<dyn HealthProbe>>,
    pub metrics: Option<MetricsRenderer>,
    /// How long each readiness check may take.
    pub readiness_timeout: Duration,
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
            .field(
                "probes",
                &self.probes.iter().map(|p| p.name()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The application state every API handler can reach.
#[derive(Clone)]
pub struct ApiState {
    pub profiles: ProfileService,
    pub push_tokens: PushTokenService,
    pub push: PushNotifications,
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

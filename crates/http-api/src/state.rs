//! What the handlers share.

use ports::{HealthProbe, TokenVerifier};
use std::sync::Arc;
use std::time::Duration;
use usecases::{ProfileService, PushTokenService};

/// Renders the Prometheus text exposition for `/metrics`.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// HTTP-level settings.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Largest JSON body accepted, in bytes (413 above it).
    pub json_limit: usize,
    /// Origins allowed by CORS; empty turns CORS off.
    pub cors_origins: Vec<String>,
    /// How long each readiness check may take.
    pub readiness_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            json_limit: 64 * 1024,
            cors_origins: Vec::new(),
            readiness_timeout: Duration::from_millis(1500),
        }
    }
}

/// The application state every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    pub profiles: ProfileService,
    pub push_tokens: PushTokenService,
    pub verifier: Arc<dyn TokenVerifier>,
    pub probes: Vec<Arc<dyn HealthProbe>>,
    pub metrics: Option<MetricsRenderer>,
    pub settings: HttpSettings,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

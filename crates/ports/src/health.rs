//! Readiness: can this process reach what it depends on?

use async_trait::async_trait;
use thiserror::Error;

#[derive(Debug, Error)]
#[error("{dependency} is not reachable")]
pub struct ProbeError {
    pub dependency: &'static str,
    #[source]
    pub source: anyhow::Error,
}

/// One dependency that `/readyz` checks.
#[async_trait]
pub trait HealthProbe: Send + Sync + 'static {
    /// A short stable name, shown to operators: `postgres`, `redis`.
    fn name(&self) -> &'static str;

    /// A cheap round trip (e.g. `SELECT 1`, `PING`). The caller bounds it with
    /// a timeout; implementations need not.
    async fn check(&self) -> Result<(), ProbeError>;
}

//! Readiness probe for Postgres.

use crate::pool::PgPool;
use async_trait::async_trait;
use ports::{HealthProbe, ProbeError};

/// Checks that a pooled connection answers `SELECT 1`.
#[derive(Clone)]
pub struct PgHealthProbe {
    pool: PgPool,
}

impl std::fmt::Debug for PgHealthProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgHealthProbe").finish_non_exhaustive()
    }
}

impl PgHealthProbe {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl HealthProbe for PgHealthProbe {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn check(&self) -> Result<(), ProbeError> {
        let fail = |e: anyhow::Error| ProbeError {
            dependency: "postgres",
            source: e,
        };
        let mut conn = self.pool.get().await.map_err(|e| fail(e.into()))?;
        // The simple protocol: no prepared statement, so it is safe
        // through a transaction pooler too.
        diesel_async::SimpleAsyncConnection::batch_execute(&mut *conn, "SELECT 1")
            .await
            .map_err(|e| fail(e.into()))?;
        Ok(())
    }
}

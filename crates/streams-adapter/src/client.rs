//! The fred client: built with a reconnect policy so that a Redis restart,
//! or a managed Redis closing idle connections, is ridden out.

use anyhow::Context as _;
use fred::prelude::*;
use std::time::Duration;

/// Builds a client and starts connecting. Waits up to `wait` for the first
/// connection; if Redis is not up by then the client keeps trying in the
/// background (readiness reports it) and this still returns the client.
pub async fn connect(url: &str, wait: Duration) -> anyhow::Result<Client> {
    let mut config = Config::from_url(url).context("REDIS_URL is not a valid Redis URL")?;
    // Without this, a client whose first connection fails (Redis down when
    // the process starts) never tries again.
    config.fail_fast = false;
    let client = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(5);
            // Each connection is named after its client (`CLIENT LIST`
            // shows which is which; tests kill exactly their own).
            c.auto_client_setname = true;
        })
        .with_performance_config(|p| {
            p.default_command_timeout = Duration::from_secs(5);
        })
        // Retry forever: 100 ms growing to 5 s between attempts.
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build()
        .context("building the Redis client")?;
    client.connect();
    match tokio::time::timeout(wait, client.wait_for_connect()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "Redis is not reachable yet; retrying in the background")
        }
        Err(_) => tracing::warn!(
            waited_ms = wait.as_millis() as u64,
            "Redis is not reachable yet; retrying in the background"
        ),
    }
    Ok(client)
}

//! Turning SIGINT/SIGTERM into a cancellation every part of the process
//! watches.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// On the first SIGINT or SIGTERM: sets `draining` (readiness turns 503,
/// requests are still accepted and served), waits `drain` (cut short by a
/// second signal), then cancels `token`, which closes the listener and stops
/// the rest gracefully.
pub fn drain_then_cancel_on_signal(
    token: CancellationToken,
    draining: Arc<AtomicBool>,
    drain: Duration,
) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!(
            drain_ms = drain.as_millis() as u64,
            "shutdown signal received; stopping"
        );
        if !drain.is_zero() {
            draining.store(true, Ordering::Relaxed);
            tokio::select! {
                () = tokio::time::sleep(drain) => {}
                () = wait_for_signal() => tracing::info!("second signal: drain cut short"),
            }
            tracing::info!("drain over; closing the listener");
        }
        token.cancel();
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

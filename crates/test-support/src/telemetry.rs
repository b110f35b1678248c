use std::sync::Once;

static INIT: Once = Once::new();

/// Installs a tracing subscriber once per test binary. Logs are shown only
/// when `TEST_LOG` is set (then `RUST_LOG` filters, default `info`), so
/// passing tests stay quiet and failing ones can be rerun with logs.
pub fn init_tracing() {
    INIT.call_once(|| {
        if std::env::var_os("TEST_LOG").is_none() {
            return;
        }
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

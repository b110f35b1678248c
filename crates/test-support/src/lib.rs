#![doc = include_str!("../README.md")]
#![expect(
    clippy::expect_used,
    reason = "test harness: a failure here is a failed test, reported loudly"
)]

#[cfg(feature = "browser")]
mod browser;
mod fcm;
mod firebase;
mod pgbouncer;
mod postgres;
mod processes;
mod proxy;
mod redis;
mod redis_cluster;
#[cfg(feature = "s3")]
mod s3;
mod sentinel;
mod smtp;
#[cfg(feature = "app")]
mod spawn;
mod telemetry;
mod tls;

#[cfg(feature = "browser")]
pub use browser::Browser;
pub use fcm::{
    FAKE_FCM_CLIENT_EMAIL, FAKE_FCM_KEY_ID, FAKE_FCM_PROJECT, FakeFcm, FcmReply, FcmRequest,
    OAuthRequest,
};
pub use firebase::{AuthEmulator, EMULATOR_PROJECT};
pub use pgbouncer::{PgBouncer, PooledDatabase};
pub use postgres::{ScratchDatabase, TestDb};
pub use processes::{RedisProcess, free_port};
pub use proxy::TcpProxy;
pub use redis::TestRedis;
pub use redis_cluster::TestRedisCluster;
#[cfg(feature = "s3")]
pub use s3::{HttpObjectClient, S3Server};
pub use sentinel::{SENTINEL_SERVICE, TestSentinel};
pub use smtp::{ReceivedMail, SmtpBehaviour, SmtpSink};
#[cfg(feature = "app")]
pub use spawn::{
    MetricsWindow, TEST_DEV_TOKEN_SECRET, TestApp, sample, spawn_app, spawn_app_on, spawn_app_with,
    spawn_sibling, test_settings,
};
pub use telemetry::init_tracing;
pub use tls::{Issued, TestCa, TlsPostgres, TlsRedis};

/// A short random suffix for names that must not collide between tests.
pub fn unique_suffix() -> String {
    use rand::Rng as _;
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

/// Seconds since the Unix epoch, for names that carry their birth time so
/// leftovers of crashed runs can be swept.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Leftovers older than this are swept when a test process starts.
const LEFTOVER_AGE_SECS: u64 = 3600;

/// Runs `fut` to completion on a fresh runtime in a fresh thread: for cleanup
/// in `Drop`, which may run inside or outside an async runtime.
fn block_on_fresh_runtime<F>(fut: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let joined = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building a cleanup runtime")
            .block_on(fut);
    })
    .join();
    if joined.is_err() {
        eprintln!("test-support: cleanup thread panicked");
    }
}

/// Files under `dir`, recursively (0 when it does not exist).
pub fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| {
                if e.path().is_dir() {
                    files_under(&e.path())
                } else {
                    1
                }
            })
            .sum()
    })
}

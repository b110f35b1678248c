//! A Redis key prefix of its own for each test.

use crate::{LEFTOVER_AGE_SECS, block_on_fresh_runtime, now_secs, unique_suffix};
use deadpool_redis::redis::{self, AsyncCommands as _};
use tokio::sync::OnceCell;

const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
const PREFIX_ROOT: &str = "test:";

static PREPARED: OnceCell<()> = OnceCell::const_new();

/// The Redis tests use: `TEST_REDIS_URL`, or a local default.
pub(crate) fn base_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn unreachable(url: &str, e: impl std::fmt::Display) -> ! {
    panic!(
        "\n\nRedis is not reachable at {url}: {e}\n\
         Tests need a real Redis. Start it with `just services`, or:\n  \
         redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save \"\" --appendonly no\n\
         (or point TEST_REDIS_URL at one).\n"
    )
}

/// A key prefix of its own (`test:<time>:<random>:`). Every key under it is
/// deleted (SCAN + UNLINK, never FLUSHDB) when this value is dropped.
#[derive(Debug)]
pub struct TestRedis {
    url: String,
    prefix: String,
}

impl TestRedis {
    pub async fn new() -> Self {
        crate::init_tracing();
        let url = base_url();
        PREPARED.get_or_init(|| sweep_leftovers(url.clone())).await;
        Self {
            prefix: format!("{PREFIX_ROOT}{}:{}:", now_secs(), unique_suffix()),
            url,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every key the code under test writes must start with this.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A plain connection, for assertions.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        client(&self.url)
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| unreachable(&self.url, e))
    }

    /// The keys under this test's prefix.
    pub async fn keys(&self) -> Vec<String> {
        scan(&mut self.connection().await, &format!("{}*", self.prefix)).await
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let url = self.url.clone();
        let pattern = format!("{}*", self.prefix);
        block_on_fresh_runtime(async move {
            if let Ok(mut conn) = client(&url).get_multiplexed_async_connection().await {
                let keys = scan(&mut conn, &pattern).await;
                unlink(&mut conn, &keys).await;
            }
        });
    }
}

fn client(url: &str) -> redis::Client {
    redis::Client::open(url).unwrap_or_else(|e| panic!("TEST_REDIS_URL {url:?}: {e}"))
}

async fn scan(conn: &mut redis::aio::MultiplexedConnection, pattern: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    // Bounded: SCAN terminates, but never trust a loop without a cap.
    for _ in 0..100_000 {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .unwrap_or((0, Vec::new()));
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys
}

async fn unlink(conn: &mut redis::aio::MultiplexedConnection, keys: &[String]) {
    for chunk in keys.chunks(500) {
        let _: Result<(), _> = conn.unlink(chunk).await;
    }
}

/// Once per test process: unlink keys of test prefixes older than an hour.
async fn sweep_leftovers(url: String) {
    let mut conn = client(&url)
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| unreachable(&url, e));
    let _: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .unwrap_or_else(|e| unreachable(&url, e));
    let cutoff = now_secs().saturating_sub(LEFTOVER_AGE_SECS);
    let stale: Vec<String> = scan(&mut conn, &format!("{PREFIX_ROOT}*"))
        .await
        .into_iter()
        .filter(|k| {
            k.trim_start_matches(PREFIX_ROOT)
                .split(':')
                .next()
                .and_then(|t| t.parse::<u64>().ok())
                .is_some_and(|born| born < cutoff)
        })
        .collect();
    unlink(&mut conn, &stale).await;
}

//! Contract suites: the behaviour every implementation of a port must show.
//!
//! Each suite is a set of async functions taking the implementation under
//! test, plus a macro that expands to one `#[tokio::test]` per function:
//!
//! ```ignore
//! ports_testing::user_store_contract!(async { MyStore::connect(..).await });
//! ```

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "contract suites are tests: a failed unwrap is a failed test"
)]

pub mod cache;
pub mod ledger;
pub mod outbox;
pub mod push;
pub mod realtime;
pub mod storage;
pub mod users;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or panics after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

//! The contract of [`Cache`].

use super::eventually;
use ports::cache::Cache;
use std::time::Duration;

pub async fn values_are_stored_replaced_and_deleted(cache: &dyn Cache) {
    assert_eq!(cache.get("k").await.unwrap(), None);
    cache
        .set("k", b"one", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"one"[..]));
    cache
        .set("k", b"two", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"two"[..]));
    cache.delete("k").await.unwrap();
    cache.delete("k").await.unwrap();
    assert_eq!(cache.get("k").await.unwrap(), None);
}

pub async fn values_expire(cache: &dyn Cache) {
    cache
        .set("short", b"x", Duration::from_millis(100))
        .await
        .unwrap();
    eventually("the value to expire", Duration::from_secs(5), || async {
        cache.get("short").await.unwrap().is_none().then_some(())
    })
    .await;
}

pub async fn window_counters_count_within_their_window_then_restart(cache: &dyn Cache) {
    let (n1, left1) = cache
        .incr_window("w", Duration::from_millis(300))
        .await
        .unwrap();
    let (n2, left2) = cache
        .incr_window("w", Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!((n1, n2), (1, 2));
    assert!(left1 <= Duration::from_millis(300) && left2 <= left1);
    assert_eq!(
        cache.get("w").await.unwrap().as_deref(),
        Some(&b"2"[..]),
        "a counter reads back as its count in decimal"
    );
    eventually("the window to restart", Duration::from_secs(5), || async {
        let (n, _) = cache
            .incr_window("w", Duration::from_millis(300))
            .await
            .unwrap();
        (n == 1).then_some(())
    })
    .await;
}

/// One `#[tokio::test]` per case; see [`user_store_contract!`](ports::user_store_contract).
#[macro_export]
macro_rules! cache_contract {
    ($make:expr) => {
        macro_rules! cache_case {
            ($name:ident) => {
                #[tokio::test]
                async fn $name() {
                    let cache = $make.await;
                    $crate::contract::cache::$name(cache.as_ref()).await;
                }
            };
        }
        cache_case!(values_are_stored_replaced_and_deleted);
        cache_case!(values_expire);
        cache_case!(window_counters_count_within_their_window_then_restart);
    };
}

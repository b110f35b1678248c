//! The queue behind Redis Sentinel (`redis-sentinel://`): a primary, its
//! replica and a Sentinel, each a real `redis-server` on loopback. Jobs go
//! to the primary the Sentinel names, and after a failover to the new one;
//! a job acknowledged (and replicated) before the failover is still there.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use ports::{JobQueue as _, NewJob};
use queue_adapter::{QueueSettings, RedisJobQueue, RedisSettings, build_pool};
use std::time::{Duration, Instant};
use test_support::TestSentinel;

fn queue(url: String) -> (RedisJobQueue, RedisSettings) {
    let settings = RedisSettings::new(url);
    let pool = build_pool(&settings).unwrap();
    (
        RedisJobQueue::new(pool, QueueSettings::new("sentinel-test:")),
        settings,
    )
}

/// Waits until every replica has what the primary at `url` has written.
async fn replicated(url: &str) {
    let mut c = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5_000)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(acked, 1, "the replica did not acknowledge the writes");
}

#[tokio::test]
async fn jobs_go_to_the_primary_the_sentinel_names_and_follow_a_failover() {
    let ha = TestSentinel::start();
    let (q, settings) = queue(ha.url());
    q.enqueue(NewJob::new("before", 1, &1).unwrap())
        .await
        .unwrap();
    // It is on the primary the Sentinel named.
    let mut primary = redis::Client::open(ha.primary_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("sentinel-test:*")
        .query_async(&mut primary)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "nothing of the queue's on the primary");
    replicated(&ha.primary_url()).await;
    let old = ha.primary_port();
    ha.failover();
    assert_ne!(ha.primary_port(), old);
    // The queue's connections were to the old primary, which the failover
    // closed: the next calls reconnect through the Sentinel. Each call
    // fails at most once (a connection found closed) and waits at most
    // the acquire timeout for a new one; a few seconds is plenty.
    let bound = settings.acquire_timeout * 2 + Duration::from_secs(3);
    let started = Instant::now();
    let enqueued = loop {
        match q.enqueue(NewJob::new("after", 1, &2).unwrap()).await {
            Ok(id) => break id,
            Err(e) => assert!(started.elapsed() < bound, "still failing: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = enqueued;
    let leased = q
        .fetch_many("default", Duration::from_secs(30), 10)
        .await
        .unwrap();
    let mut kinds: Vec<&str> = leased.iter().map(|j| j.kind.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["after", "before"], "a job was lost in the failover");
}

#[test]
fn sentinel_urls_follow_freds_convention() {
    let parts = queue_adapter::sentinel_parts(
        "redis-sentinel://app:secret@s1:26379/2?node=s2:26380&sentinelServiceName=mymaster&sentinelPassword=sp",
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        parts.sentinels,
        ["redis://:sp@s1:26379", "redis://:sp@s2:26380"]
    );
    assert_eq!(parts.service, "mymaster");
    assert_eq!(
        parts.primary("10.0.0.5", 6379),
        "redis://app:secret@10.0.0.5:6379/2"
    );
    let tls = queue_adapter::sentinel_parts("rediss-sentinel://s1:26379?sentinelServiceName=m")
        .unwrap()
        .unwrap();
    assert_eq!(tls.primary("h", 1), "rediss://h:1");
    assert!(
        queue_adapter::sentinel_parts("redis-sentinel://s1:26379")
            .unwrap()
            .is_err()
    );
    assert!(
        queue_adapter::sentinel_parts("redis-sentinel://s1:26379?sentinelServiceName=m&bogus=1")
            .unwrap()
            .is_err()
    );
    assert_eq!(queue_adapter::sentinel_parts("redis://h:6379"), None);
}

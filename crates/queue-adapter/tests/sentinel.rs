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
    // A failed attempt may still have stored the job (the new primary's
    // replica, the old primary, still resyncing and not acknowledging):
    // its outcome is unknown, and the retry may repeat it.
    let mut attempts = 0;
    loop {
        attempts += 1;
        match q.enqueue(NewJob::new("after", 1, &2).unwrap()).await {
            Ok(_) => break,
            Err(e) => assert!(started.elapsed() < bound, "still failing: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leased = q
        .fetch_many("default", Duration::from_secs(30), 10)
        .await
        .unwrap();
    let mut kinds: Vec<&str> = leased.iter().map(|j| j.kind.as_str()).collect();
    kinds.sort_unstable();
    let afters = kinds.iter().filter(|k| **k == "after").count();
    assert!(
        (1..=attempts).contains(&afters),
        "{afters} copies of the job after {attempts} attempts"
    );
    kinds.dedup();
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

/// With a replica connected, an enqueue and a finished job's removal
/// count as done only once the replica holds them (`WAIT`): while the
/// replica is stalled they fail (their outcome unknown, so the caller
/// retries) after `REDIS_WAIT_TIMEOUT_MS`, instead of being acknowledged
/// and lost with the primary in a failover.
#[tokio::test]
async fn an_enqueue_and_a_completion_count_only_once_a_replica_holds_them() {
    let ha = TestSentinel::start();
    let timeout = Duration::from_millis(300);
    let settings = RedisSettings::new(ha.url());
    let q = RedisJobQueue::new(
        build_pool(&settings).unwrap(),
        QueueSettings {
            replica_wait: ports::ReplicaWait {
                acks: ports::ReplicaAcks::Auto,
                timeout,
            },
            ..QueueSettings::new("wait-test:")
        },
    );
    let before = ha.primary_waits();
    q.enqueue(NewJob::new("kept", 1, &1).unwrap())
        .await
        .unwrap();
    assert!(
        ha.primary_waits() > before,
        "the enqueue did not wait for the replica"
    );
    let leased = q
        .fetch_many("default", Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    let lease = queue_adapter::Lease {
        id: leased[0].id,
        token: leased[0].token,
    };

    // The replica stalls for 3 s: far longer than the 300 ms wait.
    let mut stall = ha.stall_replica(3);
    let started = Instant::now();
    let refused = q.enqueue(NewJob::new("unreplicated", 1, &2).unwrap()).await;
    assert!(
        matches!(refused, Err(ports::EnqueueJobError::Unavailable(_))),
        "an enqueue no replica holds was acknowledged: {refused:?}"
    );
    let completed = q.complete("default", lease).await;
    assert!(
        matches!(completed, Err(queue_adapter::QueueError::Unavailable(_))),
        "a removal no replica holds was acknowledged: {completed:?}"
    );
    // Each waited its timeout, no more (the stall is 3 s).
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "waited {:?}",
        started.elapsed()
    );
    stall.wait().unwrap();
    // The replica is back: the retries succeed (the completion finds its
    // job already removed, as a retry after an unknown outcome may).
    q.enqueue(NewJob::new("unreplicated", 1, &2).unwrap())
        .await
        .unwrap();
    assert!(q.complete("default", lease).await.is_ok());
}

/// `off` never waits, even with a replica connected.
#[tokio::test]
async fn replica_wait_off_never_waits() {
    let ha = TestSentinel::start();
    let q = RedisJobQueue::new(
        build_pool(&RedisSettings::new(ha.url())).unwrap(),
        QueueSettings {
            replica_wait: ports::ReplicaWait::OFF,
            ..QueueSettings::new("nowait-test:")
        },
    );
    let before = ha.primary_waits();
    for i in 0..5 {
        q.enqueue(NewJob::new("fast", 1, &i).unwrap())
            .await
            .unwrap();
    }
    assert_eq!(ha.primary_waits(), before);
}

/// Concurrent enqueues share their `WAIT`s (one covers every write of its
/// connection before it): a `WAIT` blocks the shared connection while it
/// waits, so one each would serialize them.
#[tokio::test]
async fn concurrent_enqueues_share_their_waits() {
    const JOBS: usize = 200;
    let ha = TestSentinel::start();
    let q = RedisJobQueue::new(
        build_pool(&RedisSettings::new(ha.url())).unwrap(),
        QueueSettings::new("group-wait-test:"),
    );
    // The replica count is read once, before the measured writes.
    q.enqueue(NewJob::new("first", 1, &0).unwrap())
        .await
        .unwrap();
    let before = ha.primary_waits();
    let all = futures_util::future::join_all((0..JOBS).map(|i| {
        let q = q.clone();
        async move { q.enqueue(NewJob::new("many", 1, &i).unwrap()).await }
    }))
    .await;
    assert!(
        all.iter().all(Result::is_ok),
        "{:?}",
        all.iter().find(|r| r.is_err())
    );
    let sent = ha.primary_waits() - before;
    assert!(
        (1..JOBS as u64 / 4).contains(&sent),
        "{sent} WAITs for {JOBS} concurrent enqueues"
    );
    // Every job is there.
    let leased = q
        .fetch_many("default", Duration::from_secs(30), JOBS + 10)
        .await
        .unwrap();
    assert_eq!(leased.len(), JOBS + 1);
}

//! Unique keys: refused duplicates, and when a key is released.

use crate::helpers::*;

#[tokio::test]
async fn unique_keys_refuse_duplicates_until_the_job_completes_or_dies() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let unique = |n| job(n).unique("user:1", Duration::from_secs(600));
    q.enqueue(unique(1)).await.unwrap();
    assert!(
        matches!(q.enqueue(unique(2)).await, Err(EnqueueJobError::Duplicate { key }) if key == "user:1")
    );
    let script = Arc::new(Script::default());
    let w = start(&q, settings(&[("default", 1)]), "t", script.clone());
    eventually("the unique job", Duration::from_secs(10), || async {
        (script.done() == 1).then_some(())
    })
    .await;
    eventually("the key to be released", Duration::from_secs(5), || async {
        q.enqueue(unique(3)).await.ok()
    })
    .await;
    eventually("the second unique job", Duration::from_secs(10), || async {
        (script.done() == 2).then_some(())
    })
    .await;
    w.stop().await;

    // A dead job releases its key too.
    let failing = Arc::new(Script {
        permanent: true,
        ..Script::default()
    });
    let w = start(&q, settings(&[("default", 1)]), "t", failing);
    q.enqueue(unique(4)).await.unwrap();
    eventually("the dead job", Duration::from_secs(10), || async {
        (q.stats("default").await.unwrap().dead == 1).then_some(())
    })
    .await;
    w.stop().await;
    q.enqueue(unique(5)).await.unwrap();
}

#[tokio::test]
async fn a_unique_key_is_held_until_a_scheduled_job_is_due_plus_its_ttl() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let at = Utc::now() + chrono::Duration::seconds(20);
    let id = q
        .enqueue(job(1).unique("later", Duration::from_secs(5)).run_at(at))
        .await
        .unwrap();
    let (holder, ttl) = unique_holder(&redis, "later").await;
    assert_eq!(holder, Some(id.to_string()));
    assert!(
        ttl > 20_000 && ttl <= 25_000,
        "held {ttl} ms: until due (20 s) plus the TTL (5 s)"
    );
}

#[tokio::test]
async fn a_retry_keeps_the_unique_key_until_the_retry_is_due_plus_its_ttl() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let id = q
        .enqueue(job(1).unique("backoff", Duration::from_secs(1)))
        .await
        .unwrap();
    // A failed attempt retried in 20 s.
    let a = q
        .fetch("default", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        q.fail("default", a.lease(), "later", Some(Duration::from_secs(20)))
            .await
            .unwrap(),
        FailOutcome::Retry
    );
    let (holder, ttl) = unique_holder(&redis, "backoff").await;
    assert_eq!(holder, Some(id.to_string()));
    assert!(ttl > 20_000, "held {ttl} ms past a 20 s backoff");

    // A recovered lease retried after a 10 to 20 s backoff.
    let mut c = redis.connection().await;
    let _: i64 = c
        .zadd(
            format!("{}q:default:retry", redis.prefix()),
            id.to_string(),
            0,
        )
        .await
        .unwrap();
    q.forward("default").await.unwrap();
    q.fetch("default", Duration::from_millis(10))
        .await
        .unwrap()
        .unwrap();
    // As if the key were about to run out when the lease is recovered.
    let _: bool = c
        .pexpire(format!("{}q:unique:backoff", redis.prefix()), 100)
        .await
        .unwrap();
    eventually(
        "the lease to be recovered",
        Duration::from_secs(5),
        || async {
            let r = q
                .recover("default", Duration::from_secs(10), Duration::from_secs(10))
                .await
                .unwrap();
            (r == (1, 0)).then_some(())
        },
    )
    .await;
    let (holder, ttl) = unique_holder(&redis, "backoff").await;
    assert_eq!(holder, Some(id.to_string()));
    assert!(ttl > 5_000, "held {ttl} ms past at least a 5 s backoff");
}

#[tokio::test]
async fn a_revived_job_takes_its_unique_key_again_but_never_a_newer_jobs() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let unique = |n| job(n).unique("revive", Duration::from_secs(600));
    let kill = |id: ports::JobId| {
        let q = q.clone();
        async move {
            let leased = q
                .fetch("default", Duration::from_secs(30))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(leased.id, id);
            assert_eq!(
                q.fail("default", leased.lease(), "dead", None)
                    .await
                    .unwrap(),
                FailOutcome::Dead
            );
        }
    };
    let old = q.enqueue(unique(1)).await.unwrap();
    kill(old).await;
    assert_eq!(unique_holder(&redis, "revive").await.0, None, "released");
    assert!(q.revive(&old.to_string()).await.unwrap());
    assert_eq!(
        unique_holder(&redis, "revive").await.0,
        Some(old.to_string()),
        "taken again"
    );
    assert!(matches!(
        q.enqueue(unique(2)).await,
        Err(EnqueueJobError::Duplicate { .. })
    ));

    // It dies again, and a newer job takes the key before the revive.
    kill(old).await;
    let newer = q.enqueue(unique(3)).await.unwrap();
    assert!(q.revive(&old.to_string()).await.unwrap(), "revived anyway");
    assert_eq!(
        unique_holder(&redis, "revive").await.0,
        Some(newer.to_string()),
        "not stolen"
    );
    // The revived job finishing does not release the newer job's key.
    let first = q
        .fetch("default", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let second = q
        .fetch("default", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let (revived, newest) = if first.id == old {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!((revived.id, newest.id), (old, newer));
    assert_eq!(
        q.complete("default", revived.lease()).await.unwrap(),
        LeaseOutcome::Applied
    );
    assert_eq!(
        unique_holder(&redis, "revive").await.0,
        Some(newer.to_string())
    );
    q.complete("default", newest.lease()).await.unwrap();
    assert_eq!(unique_holder(&redis, "revive").await.0, None);
}

#[tokio::test]
async fn deleting_a_job_releases_its_unique_key() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let unique = |n| job(n).unique("delete", Duration::from_secs(600));
    let id = q.enqueue(unique(1)).await.unwrap();
    assert!(q.delete(&id.to_string()).await.unwrap());
    q.enqueue(unique(2)).await.unwrap();
}

#[tokio::test]
async fn a_job_recovered_into_the_dead_set_releases_its_unique_key() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let unique = |n| job(n).unique("recovered", Duration::from_secs(600));
    let id = q.enqueue(unique(1).max_retries(0)).await.unwrap();
    q.fetch("default", Duration::from_millis(20))
        .await
        .unwrap()
        .unwrap();
    eventually(
        "the lease to end in the dead set",
        Duration::from_secs(5),
        || async {
            let r = q
                .recover("default", Duration::ZERO, Duration::ZERO)
                .await
                .unwrap();
            (r == (0, 1)).then_some(())
        },
    )
    .await;
    assert_eq!(q.dead(None, 10).await.unwrap()[0].id, id.to_string());
    q.enqueue(unique(2)).await.unwrap();
}

//! Upgrading with work queued: jobs stored by the version before `body`
//! (every field apart) still run, fail, die, show in the dead set and are
//! revived by this one.

use crate::helpers::*;

/// Stores job `id` exactly as the version before `body` did: every field
/// of its own, zero counters and an empty unique key included.
async fn store_old_format(redis: &TestRedis, id: &ports::JobId, n: u64, unique: Option<&str>) {
    let p = format!("{}q:", redis.prefix());
    let mut c = redis.connection().await;
    let now = Utc::now().timestamp_millis().to_string();
    let (unique_key, unique_ttl) = match unique {
        Some(k) => (k.to_owned(), "60000".to_owned()),
        None => (String::new(), "0".to_owned()),
    };
    let fields: Vec<(&str, String)> = vec![
        ("kind", "t".into()),
        ("version", "1".into()),
        ("payload", format!("{{\"n\":{n}}}")),
        ("queue", "default".into()),
        ("max_retries", "0".into()),
        ("timeout_ms", "0".into()),
        ("unique_key", unique_key.clone()),
        ("unique_ttl_ms", unique_ttl),
        ("attempt", "0".into()),
        ("lease", "0".into()),
        ("enqueued_at", now.clone()),
        ("state", "pending".into()),
        ("ready_at", now),
    ];
    let _: () = c
        .hset_multiple(format!("{p}job:{id}"), &fields)
        .await
        .unwrap();
    if let Some(k) = unique {
        let _: () = c
            .set(format!("{p}unique:{k}"), id.to_string())
            .await
            .unwrap();
    }
    let _: () = c.sadd(format!("{p}queues"), "default").await.unwrap();
    let _: () = c
        .lpush(format!("{p}default:pending"), id.to_string())
        .await
        .unwrap();
}

#[tokio::test]
async fn jobs_queued_by_the_previous_format_run_after_an_upgrade() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let (a, b) = (ports::JobId::new(), ports::JobId::new());
    store_old_format(&redis, &a, 7, None).await;
    store_old_format(&redis, &b, 8, Some("old-unique")).await;
    let script = Arc::new(Script::default());
    let w = start(&q, settings(&[("default", 1)]), "t", script.clone());
    eventually("both old jobs", Duration::from_secs(10), || async {
        (script.done() == 2).then_some(())
    })
    .await;
    w.stop().await;
    let mut ran: Vec<(u64, u32)> = script.runs().iter().map(|(n, a, _)| (*n, *a)).collect();
    ran.sort_unstable();
    assert_eq!(
        ran,
        [(7, 1), (8, 1)],
        "each ran once, as attempt 1, with its payload"
    );
    assert!(
        job_hash(&redis, &a).await.is_empty(),
        "completed jobs are deleted"
    );
    assert!(job_hash(&redis, &b).await.is_empty());
    assert_eq!(
        unique_holder(&redis, "old-unique").await.0,
        None,
        "the old job's unique key is released when it completes"
    );
    let s = q.stats("default").await.unwrap();
    assert_eq!((s.pending, s.active, s.processed), (0, 0, 2));
}

#[tokio::test]
async fn an_old_format_job_that_dies_is_listed_and_revived() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let id = ports::JobId::new();
    store_old_format(&redis, &id, 9, None).await;
    let failing = Arc::new(Script {
        permanent: true,
        ..Script::default()
    });
    let w = start(&q, settings(&[("default", 1)]), "t", failing);
    let dead = eventually("the dead job", Duration::from_secs(10), || async {
        let dead = q.dead(Some("default"), 10).await.unwrap();
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    w.stop().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id.to_string());
    assert_eq!(dead[0].kind, "t");
    assert_eq!(dead[0].attempts, 1);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&dead[0].payload).unwrap(),
        serde_json::json!({"n": 9})
    );
    assert!(q.revive(&id.to_string()).await.unwrap(), "found by id");
    let script = Arc::new(Script::default());
    let w = start(&q, settings(&[("default", 1)]), "t", script.clone());
    eventually("the revived job", Duration::from_secs(10), || async {
        (script.done() == 1).then_some(())
    })
    .await;
    w.stop().await;
    assert_eq!(script.runs()[0].0, 9);
}

#[tokio::test]
async fn a_new_job_stores_only_what_it_needs() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let plain = q.enqueue(job(1).max_retries(0)).await.unwrap();
    let h = job_hash(&redis, &plain).await;
    let mut names: Vec<&str> = h.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["body", "ready_at", "state"]);
    let body: serde_json::Value = serde_json::from_str(&h["body"]).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"k": "t", "p": {"n": 1}}),
        "defaults (version 1, the default queue and timeout) are left out"
    );
    let mut c = redis.connection().await;
    let encoding: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(format!("{}q:job:{plain}", redis.prefix()))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(encoding, "listpack", "a small job's hash stays compact");
    let versioned = q
        .enqueue(
            NewJob::new("t", 3, &serde_json::json!({}))
                .unwrap()
                .on_queue("mail")
                .timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    let leased = q
        .fetch_many("mail", Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].id, versioned);
    assert_eq!(
        (
            leased[0].version,
            leased[0].timeout,
            leased[0].queue.as_str()
        ),
        (3, Duration::from_secs(5), "mail")
    );
    q.fail("mail", leased[0].lease(), "dead", None)
        .await
        .unwrap();
    let dead = q.dead(None, 10).await.unwrap();
    assert_eq!(
        (dead.len(), dead[0].queue.as_str(), dead[0].kind.as_str()),
        (1, "mail", "t")
    );
    assert!(
        q.revive(&versioned.to_string()).await.unwrap(),
        "its queue is found from its body"
    );
    let unique = q
        .enqueue(job(2).max_retries(3).unique("u-1", Duration::from_secs(60)))
        .await
        .unwrap();
    let h = job_hash(&redis, &unique).await;
    assert_eq!(h["max_retries"], "3");
    assert_eq!(h["unique_key"], "u-1");
    assert_eq!(h["unique_ttl_ms"], "60000");
}

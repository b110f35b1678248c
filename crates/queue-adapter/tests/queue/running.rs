//! Running jobs: processing, concurrency, weights, shutdown, enqueueing.

use crate::helpers::*;

#[tokio::test]
async fn enqueued_jobs_are_processed_and_counted() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let script = Arc::new(Script::default());
    let w = start(&q, settings(&[("default", 1)]), "t", script.clone());
    for n in 0..20 {
        q.enqueue(job(n)).await.unwrap();
    }
    eventually("20 jobs", Duration::from_secs(10), || async {
        (script.done() == 20).then_some(())
    })
    .await;
    w.stop().await;
    let s = q.stats("default").await.unwrap();
    assert_eq!(
        (s.pending, s.active, s.retry, s.dead, s.processed, s.failed),
        (0, 0, 0, 0, 20, 0)
    );
    assert!(script.runs().iter().all(|(_, attempt, _)| *attempt == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_never_exceeds_the_limit() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let script = Arc::new(Script {
        sleep: Duration::from_millis(30),
        ..Script::default()
    });
    let mut s = settings(&[("default", 1)]);
    s.concurrency = 4;
    let w = start(&q, s, "t", script.clone());
    for n in 0..40 {
        q.enqueue(job(n)).await.unwrap();
    }
    eventually("40 jobs", Duration::from_secs(20), || async {
        (script.done() == 40).then_some(())
    })
    .await;
    w.stop().await;
    assert_eq!(
        script.max_running.load(Ordering::SeqCst),
        4,
        "reaches but never exceeds 4"
    );
}

#[tokio::test]
async fn weighted_queues_all_make_progress() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let script = Arc::new(Script {
        sleep: Duration::from_millis(2),
        ..Script::default()
    });
    for n in 0..60 {
        q.enqueue(job(n).on_queue("critical")).await.unwrap();
        q.enqueue(job(1000 + n).on_queue("low")).await.unwrap();
    }
    let mut s = settings(&[("critical", 6), ("low", 1)]);
    s.concurrency = 1;
    let w = start(&q, s, "t", script.clone());
    eventually("120 jobs", Duration::from_secs(20), || async {
        (script.done() == 120).then_some(())
    })
    .await;
    w.stop().await;
    let order: Vec<u64> = script.runs().iter().map(|r| r.0).collect();
    let low_in_first_half = order[..60].iter().filter(|n| **n >= 1000).count();
    assert!(
        low_in_first_half > 0,
        "the low queue made progress while critical had work: {order:?}"
    );
    assert!(
        low_in_first_half < 30,
        "critical was favoured: {low_in_first_half} low jobs in the first 60"
    );
}

#[tokio::test]
async fn graceful_shutdown_returns_unfinished_jobs_to_the_queue() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let script = Arc::new(Script {
        sleep: Duration::from_secs(30),
        ..Script::default()
    });
    let mut s = settings(&[("default", 1)]);
    s.shutdown_timeout = Duration::from_millis(300);
    let w = start(&q, s, "t", script.clone());
    q.enqueue(job(1)).await.unwrap();
    q.enqueue(job(2)).await.unwrap();
    eventually("both jobs running", Duration::from_secs(10), || async {
        (script.running.load(Ordering::SeqCst) == 2).then_some(())
    })
    .await;
    w.stop().await;
    let s = q.stats("default").await.unwrap();
    assert_eq!(
        (s.pending, s.active, s.failed),
        (2, 0, 0),
        "returned, not failed"
    );
    let again = q
        .fetch("default", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.attempt, 1, "the interrupted attempt does not count");
}

#[tokio::test]
async fn invalid_jobs_are_refused_clearly() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    assert!(matches!(
        q.enqueue(job(1).on_queue("Bad Queue!")).await,
        Err(EnqueueJobError::Invalid(_))
    ));
    let mut empty = job(1);
    empty.kind.clear();
    assert!(matches!(
        q.enqueue(empty).await,
        Err(EnqueueJobError::Invalid(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_share_batches_and_each_keeps_its_own_outcome() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    // 300 at once: more than one batch. A third share one unique key, a
    // third are scheduled, a third are plain.
    let results = futures_util::future::join_all((0..300_u64).map(|n| {
        let q = q.clone();
        async move {
            let j = match n % 3 {
                0 => job(n).unique("shared", Duration::from_secs(60)),
                1 => job(n).run_at(Utc::now() + chrono::Duration::seconds(600)),
                _ => job(n),
            };
            (n, q.enqueue(j).await)
        }
    }))
    .await;
    let mut ids = std::collections::HashSet::new();
    let (mut unique_ok, mut duplicates) = (0, 0);
    for (n, r) in results {
        match (n % 3, r) {
            (0, Ok(id)) => {
                unique_ok += 1;
                ids.insert(id);
            }
            (0, Err(EnqueueJobError::Duplicate { key })) => {
                assert_eq!(key, "shared");
                duplicates += 1;
            }
            (_, Ok(id)) => assert!(ids.insert(id), "job {n} got an id twice"),
            (_, Err(e)) => panic!("job {n}: {e}"),
        }
    }
    assert_eq!((unique_ok, duplicates), (1, 99));
    assert_eq!(ids.len(), 201);
    let stats = q.stats("default").await.unwrap();
    assert_eq!((stats.pending, stats.scheduled), (101, 100), "{stats:?}");
    // Every pending one is there to fetch, each once.
    let fetched = q
        .fetch_many("default", Duration::from_secs(30), 200)
        .await
        .unwrap();
    assert_eq!(fetched.len(), 101);
    assert!(fetched.iter().all(|j| ids.contains(&j.id)));
}

/// Idle workers are woken once per burst, not once per job: an enqueue
/// into an empty queue wakes one, and a full fetch that leaves jobs behind
/// wakes the next.
#[tokio::test]
async fn wake_ups_come_once_per_burst_and_pass_on_while_work_remains() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let wake = format!("{}q:default:wake", redis.prefix());
    let mut c = redis.connection().await;
    for n in 0..10 {
        q.enqueue(job(n)).await.unwrap();
    }
    let tokens: i64 = c.llen(&wake).await.unwrap();
    assert_eq!(
        tokens, 1,
        "ten enqueues into an empty queue wake one worker"
    );
    let _: () = c.del(&wake).await.unwrap();

    let got = q
        .fetch_many("default", Duration::from_secs(30), 4)
        .await
        .unwrap();
    assert_eq!(got.len(), 4);
    let tokens: i64 = c.llen(&wake).await.unwrap();
    assert_eq!(tokens, 1, "a full batch with six left wakes another worker");
    let _: () = c.del(&wake).await.unwrap();

    let rest = q
        .fetch_many("default", Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!(rest.len(), 6);
    let tokens: i64 = c.llen(&wake).await.unwrap();
    assert_eq!(tokens, 0, "a batch that empties the queue wakes nobody");
}

/// Batches larger than one Lua `unpack` takes are split inside the scripts.
#[tokio::test]
async fn batches_of_thousands_are_fetched_and_completed_whole() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    for n in 0..1_500 {
        q.enqueue(job(n)).await.unwrap();
    }
    let jobs = q
        .fetch_many("default", Duration::from_secs(60), 1_500)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1_500);
    assert_eq!(q.stats("default").await.unwrap().active, 1_500);
    let leases: Vec<_> = jobs.iter().map(|j| j.lease()).collect();
    let outcomes = q.complete_many("default", &leases).await.unwrap();
    assert!(outcomes.iter().all(|o| *o == LeaseOutcome::Applied));
    let s = q.stats("default").await.unwrap();
    assert_eq!((s.active, s.pending, s.processed), (0, 0, 1_500));
}

//! The dead set: listing, reviving, deleting, capping.

use crate::helpers::*;

#[tokio::test]
async fn dead_jobs_can_be_listed_revived_and_deleted() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let failing = Arc::new(Script {
        permanent: true,
        ..Script::default()
    });
    let w = start(&q, settings(&[("default", 1)]), "t", failing);
    let a = q.enqueue(job(1)).await.unwrap();
    let b = q.enqueue(job(2)).await.unwrap();
    eventually("two dead jobs", Duration::from_secs(10), || async {
        (q.dead(None, 10).await.unwrap().len() == 2).then_some(())
    })
    .await;
    w.stop().await;
    assert!(q.delete(&b.to_string()).await.unwrap());
    assert!(!q.delete(&b.to_string()).await.unwrap());
    assert!(q.revive(&a.to_string()).await.unwrap());
    let script = Arc::new(Script::default());
    let w = start(&q, settings(&[("default", 1)]), "t", script.clone());
    eventually("the revived job", Duration::from_secs(10), || async {
        (script.done() == 1).then_some(())
    })
    .await;
    w.stop().await;
    let s = q.stats("default").await.unwrap();
    assert_eq!((s.dead, s.pending), (0, 0));
    assert_eq!(q.queues().await.unwrap(), ["default"]);
}

#[tokio::test]
async fn the_recoverer_caps_the_dead_set_by_size_and_age_without_new_deaths() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = q.enqueue(job(n)).await.unwrap();
        let leased = q
            .fetch("default", Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        q.fail("default", leased.lease(), "dead", None)
            .await
            .unwrap();
        ids.push(id);
    }
    assert_eq!(q.stats("default").await.unwrap().dead, 3);
    // A worker whose queue keeps at most 2 dead jobs, for 2 s, and no job dies.
    let capped = RedisJobQueue::new(
        queue_adapter::build_pool(&RedisSettings::new(redis.url())).unwrap(),
        QueueSettings {
            dead_max_size: 2,
            dead_max_age: Duration::from_secs(2),
            ..QueueSettings::new(redis.prefix())
        },
    );
    let w = start(
        &capped,
        settings(&[("default", 1)]),
        "t",
        Arc::new(Script::default()),
    );
    eventually(
        "the dead set capped by size",
        Duration::from_secs(5),
        || async { (q.stats("default").await.unwrap().dead == 2).then_some(()) },
    )
    .await;
    assert!(
        job_hash(&redis, &ids[0]).await.is_empty(),
        "the oldest is dropped"
    );
    eventually(
        "the dead set capped by age",
        Duration::from_secs(10),
        || async { (q.stats("default").await.unwrap().dead == 0).then_some(()) },
    )
    .await;
    w.stop().await;
    for id in &ids {
        assert!(job_hash(&redis, id).await.is_empty());
    }
}

#[tokio::test]
async fn revive_all_revives_the_dead_jobs_of_one_queue_or_of_all() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    for (n, queue_name) in [(1, "default"), (2, "default"), (3, "low")] {
        q.enqueue(job(n).on_queue(queue_name)).await.unwrap();
        let leased = q
            .fetch(queue_name, Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        q.fail(queue_name, leased.lease(), "dead", None)
            .await
            .unwrap();
    }
    assert_eq!(q.revive_all(Some("low")).await.unwrap(), 1);
    let (low, default) = (
        q.stats("low").await.unwrap(),
        q.stats("default").await.unwrap(),
    );
    assert_eq!((low.dead, low.pending), (0, 1));
    assert_eq!((default.dead, default.pending), (2, 0));
    assert_eq!(q.revive_all(None).await.unwrap(), 2);
    let default = q.stats("default").await.unwrap();
    assert_eq!((default.dead, default.pending), (0, 2));
    assert_eq!(
        q.revive_all(None).await.unwrap(),
        0,
        "nothing left to revive"
    );
    let again = q
        .fetch("default", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.attempt, 1, "a fresh set of retries");
}

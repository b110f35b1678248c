//! The queue on a real three-primary Redis Cluster: each queue's keys live
//! in its own hash slot, queues on different nodes, and everything the queue
//! does on one Redis it does there too.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

#[expect(
    dead_code,
    unused_imports,
    reason = "shared with tests/queue; not every helper is used here"
)]
#[path = "queue/helpers.rs"]
mod helpers;

use helpers::*;
use queue_adapter::{HeldBack, JobState};
use test_support::TestRedisCluster;

fn cluster_queue(cluster: &TestRedisCluster) -> RedisJobQueue {
    let pool = queue_adapter::build_pool(&RedisSettings::new(cluster.url())).unwrap();
    assert!(pool.is_cluster());
    RedisJobQueue::new(pool, QueueSettings::new(cluster.prefix()))
}

/// Three queue names whose hash tags land on three different primaries.
fn queues_on_three_nodes(cluster: &TestRedisCluster) -> Vec<String> {
    let mut by_node: Vec<(u16, String)> = Vec::new();
    for i in 0..200 {
        let name = format!("q{i}");
        let node = cluster.node_of(&format!("{{{}q:{name}}}:pending", cluster.prefix()));
        if by_node.iter().all(|(n, _)| *n != node) {
            by_node.push((node, name));
        }
        if by_node.len() == 3 {
            return by_node.into_iter().map(|(_, q)| q).collect();
        }
    }
    panic!("no three queue names on three nodes among 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_queues_on_three_nodes_run_retry_die_revive_and_stay_unique() {
    let cluster = TestRedisCluster::start();
    let q = cluster_queue(&cluster);
    let names = queues_on_three_nodes(&cluster);
    let weights: Vec<(&str, u32)> = names.iter().map(|n| (n.as_str(), 1)).collect();
    let script = Arc::new(Script {
        fail_first: HashMap::from([(7, 1)]),
        ..Script::default()
    });
    let w = start(&q, settings(&weights), "t", script.clone());
    for name in &names {
        for n in 0..20 {
            q.enqueue(job(n).on_queue(name)).await.unwrap();
        }
    }
    let soon = Utc::now() + chrono::Duration::milliseconds(300);
    q.enqueue(job(100).on_queue(&names[1]).run_at(soon))
        .await
        .unwrap();
    eventually(
        "61 jobs on three nodes",
        Duration::from_secs(20),
        || async { (script.done() == 61).then_some(()) },
    )
    .await;
    w.stop().await;
    for name in &names {
        let s = q.stats(name).await.unwrap();
        assert_eq!(
            (s.pending, s.active, s.retry, s.dead),
            (0, 0, 0, 0),
            "{name}"
        );
        assert_eq!(s.failed, 1, "job 7 of {name} failed once, then ran");
    }
    assert_eq!(q.stats(&names[1]).await.unwrap().processed, 21);
    let mut known = q.queues().await.unwrap();
    known.sort();
    let mut want = names.clone();
    want.sort();
    assert_eq!(known, want);

    // A job that dies is found by its id alone, revived, listed, deleted.
    let doomed = q.enqueue(job(9).on_queue(&names[2])).await.unwrap();
    let leased = q
        .fetch_many(&names[2], Duration::from_secs(30), 1)
        .await
        .unwrap();
    assert_eq!(leased[0].id, doomed);
    let out = q
        .fail(&names[2], leased[0].lease(), "no such user", None)
        .await
        .unwrap();
    assert_eq!(out, FailOutcome::Dead);
    let dead = q.dead(None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_error, "no such user");
    assert!(q.revive(&doomed.to_string()).await.unwrap());
    let pending = q
        .list(&names[2], JobState::Pending, None, 10)
        .await
        .unwrap();
    assert_eq!(pending.jobs.len(), 1);
    assert_eq!(pending.jobs[0].id, doomed.to_string());
    assert!(q.delete(&doomed.to_string()).await.unwrap());
    assert!(!q.delete(&doomed.to_string()).await.unwrap());

    // Unique keys and periodic ticks live in their queue's slot too.
    let unique = || {
        job(1)
            .on_queue(&names[0])
            .unique("only-one", Duration::from_secs(60))
    };
    q.enqueue(unique()).await.unwrap();
    assert!(matches!(
        q.enqueue(unique()).await,
        Err(EnqueueJobError::Duplicate { .. })
    ));
    let tick = || job(2).on_queue(&names[1]);
    assert!(matches!(
        q.enqueue_tick("nightly", 1_700_000_000, tick())
            .await
            .unwrap(),
        TickOutcome::Enqueued(_)
    ));
    assert_eq!(
        q.enqueue_tick("nightly", 1_700_000_000, tick())
            .await
            .unwrap(),
        TickOutcome::AlreadyEnqueued
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controls_hold_on_a_cluster_and_an_idle_worker_wakes_for_any_queue() {
    let cluster = TestRedisCluster::start();
    let q = cluster_queue(&cluster);
    let names = queues_on_three_nodes(&cluster);
    let lease = Duration::from_secs(30);
    for name in &names {
        q.enqueue(job(1).on_queue(name)).await.unwrap();
        q.enqueue(job(2).on_queue(name)).await.unwrap();
    }
    q.pause(&names[0]).await.unwrap();
    let held = q.fetch_batch(&names[0], lease, 10).await.unwrap();
    assert_eq!(
        (held.jobs.len(), held.held_back),
        (0, Some(HeldBack::Paused))
    );
    q.resume(&names[0]).await.unwrap();
    assert_eq!(
        q.fetch_batch(&names[0], lease, 10)
            .await
            .unwrap()
            .jobs
            .len(),
        2
    );

    q.set_concurrency(&names[1], Some(1)).await.unwrap();
    assert_eq!(
        q.fetch_batch(&names[1], lease, 10)
            .await
            .unwrap()
            .jobs
            .len(),
        1
    );
    let capped = q.fetch_batch(&names[1], lease, 10).await.unwrap();
    assert_eq!(capped.held_back, Some(HeldBack::AtCapacity));

    q.set_rate(&names[2], Some("1/1h".parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(
        q.fetch_batch(&names[2], lease, 10)
            .await
            .unwrap()
            .jobs
            .len(),
        1
    );
    let limited = q.fetch_batch(&names[2], lease, 10).await.unwrap();
    assert!(matches!(limited.held_back, Some(HeldBack::RateLimited(_))));

    // An idle worker of three queues waits on three slots and is woken by
    // a job in any of them.
    let fresh: Vec<String> = names.iter().map(|n| format!("{n}-idle")).collect();
    let weights: Vec<(&str, u32)> = fresh.iter().map(|n| (n.as_str(), 1)).collect();
    let script = Arc::new(Script::default());
    let w = start(&q, settings(&weights), "t", script.clone());
    for (i, name) in fresh.iter().enumerate() {
        q.enqueue(job(i as u64).on_queue(name)).await.unwrap();
        eventually("the job to run", Duration::from_secs(10), || async {
            (script.done() == i + 1).then_some(())
        })
        .await;
    }
    w.stop().await;
}

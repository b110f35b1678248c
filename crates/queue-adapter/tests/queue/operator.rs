//! What an operator does to single jobs and kinds: look at one, run one
//! now, list and revive by kind.

use crate::helpers::*;
use queue_adapter::JobState;

fn of_kind(kind: &str, n: u64) -> NewJob {
    NewJob::new(kind, 1, &serde_json::json!({ "n": n })).unwrap()
}

#[tokio::test]
async fn a_job_is_seen_whole_and_a_scheduled_one_runs_now() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let later = Utc::now() + chrono::Duration::hours(1);
    let id = q
        .enqueue(
            job(7)
                .run_at(later)
                .unique("seven", Duration::from_secs(60))
                .max_retries(3),
        )
        .await
        .unwrap()
        .to_string();
    let d = q.job(&id).await.unwrap().unwrap();
    assert_eq!(d.summary.state, JobState::Scheduled);
    assert_eq!((d.summary.kind.as_str(), d.summary.max_retries), ("t", 3));
    assert_eq!(
        d.summary.at_ms,
        later.timestamp_millis(),
        "due when it was scheduled for"
    );
    assert_eq!(d.summary.payload["n"], 7);
    assert_eq!(d.unique_key.as_deref(), Some("seven"));
    assert!(
        q.job("01234567-89ab-7def-8123-456789abcdef")
            .await
            .unwrap()
            .is_none()
    );

    assert!(q.run_now(&id).await.unwrap());
    assert!(
        !q.run_now(&id).await.unwrap(),
        "pending now: nothing to bring forward"
    );
    let d = q.job(&id).await.unwrap().unwrap();
    assert_eq!(d.summary.state, JobState::Pending);
    let leased = q
        .fetch_many("default", Duration::from_secs(30), 5)
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].id.to_string(), id);
}

#[tokio::test]
async fn jobs_of_one_kind_page_past_others_and_revive_together() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    // 600 dead jobs, one in five of kind "wanted": more than a listing page.
    let mut wanted = Vec::new();
    for n in 0..600 {
        let kind = if n % 5 == 0 { "wanted" } else { "other" };
        let id = q.enqueue(of_kind(kind, n)).await.unwrap();
        if kind == "wanted" {
            wanted.push(id.to_string());
        }
    }
    let leased = q
        .fetch_many("default", Duration::from_secs(60), 600)
        .await
        .unwrap();
    assert_eq!(leased.len(), 600);
    for l in &leased {
        q.fail("default", l.lease(), "gone", None).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    for _ in 0..20 {
        let page = q
            .list_of_kind("default", JobState::Dead, "wanted", cursor.as_deref(), 50)
            .await
            .unwrap();
        assert!(page.jobs.iter().all(|j| j.kind == "wanted"));
        seen.extend(page.jobs.into_iter().map(|j| j.id));
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    seen.sort();
    wanted.sort();
    assert_eq!(seen, wanted, "each once, none of another kind");

    assert_eq!(q.revive_kind("default", "wanted").await.unwrap(), 120);
    let s = q.stats("default").await.unwrap();
    assert_eq!((s.pending, s.dead), (120, 480));
    assert_eq!(q.revive_kind("default", "wanted").await.unwrap(), 0);
}

#[tokio::test]
async fn the_last_hour_counts_what_completed_failed_and_was_recovered() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    for n in 0..7 {
        q.enqueue(job(n)).await.unwrap();
    }
    let leased = q
        .fetch_many("default", Duration::from_secs(30), 7)
        .await
        .unwrap();
    let leases: Vec<_> = leased.iter().map(|j| j.lease()).collect();
    q.complete_many("default", &leases[..4]).await.unwrap();
    q.fail("default", leases[4], "boom", Some(Duration::from_secs(60)))
        .await
        .unwrap();
    q.fail("default", leases[5], "boom", None).await.unwrap();
    // One lease runs out and is recovered: a failure too.
    let mut c = redis.connection().await;
    let active = format!("{}q:default:active", redis.prefix());
    let _: i64 = c.zadd(&active, leases[6].id.to_string(), 0).await.unwrap();
    assert_eq!(
        q.recover("default", Duration::from_secs(60), Duration::from_secs(60))
            .await
            .unwrap(),
        (1, 0)
    );
    let hour = q.throughput("default", 60).await.unwrap();
    assert_eq!(hour.len(), 60);
    assert!(
        hour.windows(2)
            .all(|w| w[1].minute_ms - w[0].minute_ms == 60_000)
    );
    // (Summed: the test may straddle a minute.)
    let processed: u64 = hour.iter().map(|m| m.processed).sum();
    let failed: u64 = hour.iter().map(|m| m.failed).sum();
    assert_eq!((processed, failed), (4, 3));
}

#[tokio::test]
async fn a_users_waiting_jobs_are_cancelled_on_every_queue_and_a_running_one_is_left_to_finish() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    // u1's first job is leased: it is running when the cancel comes.
    q.enqueue(job(1).owned_by("u1")).await.unwrap();
    let running = q
        .fetch_many("default", Duration::from_secs(30), 1)
        .await
        .unwrap();
    assert_eq!(running.len(), 1);
    let pending = q.enqueue(job(2).owned_by("u1")).await.unwrap();
    let scheduled = q
        .enqueue(
            job(3)
                .owned_by("u1")
                .run_at(Utc::now() + chrono::Duration::hours(1))
                .unique("welcome:u1", Duration::from_secs(600)),
        )
        .await
        .unwrap();
    let elsewhere = q
        .enqueue(job(4).owned_by("u1").on_queue("mail"))
        .await
        .unwrap();
    let someone_else = q.enqueue(job(5).owned_by("u2")).await.unwrap();
    let nobodys = q.enqueue(job(6)).await.unwrap();

    // What the queue holds about u1, for u1's data export.
    let held = q.owned_jobs("u1").await.unwrap();
    let mut states: Vec<(String, String)> = held
        .iter()
        .map(|j| (j.queue.clone(), j.state.clone()))
        .collect();
    states.sort();
    assert_eq!(
        states,
        [
            ("default".to_owned(), "active".to_owned()),
            ("default".to_owned(), "pending".to_owned()),
            ("default".to_owned(), "scheduled".to_owned()),
            ("mail".to_owned(), "pending".to_owned()),
        ]
    );
    assert!(
        held.iter()
            .all(|j| j.kind == "t" && j.payload["n"].is_number()),
        "{held:?}"
    );
    assert_eq!(q.owned_jobs("nobody").await.unwrap(), vec![]);

    let done = q.cancel_owned("u1").await.unwrap();
    assert_eq!(
        done,
        ports::CancelledJobs {
            cancelled: 3,
            running: 1
        }
    );
    assert_eq!(
        q.owned_jobs("u1").await.unwrap().len(),
        1,
        "the running one"
    );
    for id in [pending, scheduled, elsewhere] {
        assert!(
            q.job(&id.to_string()).await.unwrap().is_none(),
            "{id} is gone"
        );
    }
    for id in [someone_else, nobodys] {
        assert!(
            q.job(&id.to_string()).await.unwrap().is_some(),
            "{id} stays"
        );
    }
    let stats = q.stats("default").await.unwrap();
    assert_eq!((stats.pending, stats.scheduled), (2, 0));
    assert_eq!(q.stats("mail").await.unwrap().pending, 0);
    // The cancelled job's unique key was released with it.
    q.enqueue(job(7).unique("welcome:u1", Duration::from_secs(600)))
        .await
        .unwrap();

    // Again: nothing more to cancel; the running job is still reported
    // until it finishes.
    assert_eq!(
        q.cancel_owned("u1").await.unwrap(),
        ports::CancelledJobs {
            cancelled: 0,
            running: 1
        }
    );
    let leased = &running[0];
    q.complete(
        "default",
        queue_adapter::Lease {
            id: leased.id,
            token: leased.token,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        q.cancel_owned("u1").await.unwrap(),
        ports::CancelledJobs::default()
    );
}

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

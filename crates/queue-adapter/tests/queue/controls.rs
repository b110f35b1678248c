//! A queue's controls: pause and resume, a concurrency cap across workers,
//! a rate limit; and listing a queue's jobs a page at a time.

use crate::helpers::*;
use queue_adapter::{HeldBack, JobState, QueueError, RateLimit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_queue_starts_nothing_until_resumed_and_running_jobs_finish() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let script = Arc::new(Script {
        sleep: Duration::from_millis(50),
        ..Script::default()
    });
    let mut s = settings(&[("default", 1)]);
    s.concurrency = 2;
    let idle_wait = s.idle_wait;
    for n in 0..30 {
        q.enqueue(job(n)).await.unwrap();
    }
    let w = start(&q, s, "t", script.clone());
    eventually("a few jobs", Duration::from_secs(10), || async {
        (script.done() >= 4).then_some(())
    })
    .await;
    assert!(q.pause("default").await.unwrap());
    let done_at_pause = script.done();
    assert!(!q.pause("default").await.unwrap(), "already paused");
    assert!(
        q.controls("default")
            .await
            .unwrap()
            .paused_since_ms
            .is_some()
    );
    // What was leased when the pause landed finishes; nothing else starts.
    eventually(
        "the running jobs to finish",
        Duration::from_secs(10),
        || async { (q.stats("default").await.unwrap().active == 0).then_some(()) },
    )
    .await;
    let done_after_drain = script.done();
    assert!(
        done_after_drain <= done_at_pause + 2,
        "at most the 2 jobs in flight finish after the pause ({done_at_pause} -> {done_after_drain})"
    );
    // Three idle waits: the worker has asked for work three times since.
    tokio::time::sleep(idle_wait * 3).await;
    assert_eq!(
        script.done(),
        done_after_drain,
        "nothing starts while paused"
    );
    let batch = q
        .fetch_batch("default", Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert!(batch.jobs.is_empty());
    assert_eq!(batch.held_back, Some(HeldBack::Paused));

    assert!(q.resume("default").await.unwrap());
    assert!(!q.resume("default").await.unwrap(), "not paused any more");
    // Resuming wakes idle workers: a job is done within one idle wait (the
    // longest a worker sleeps without being woken) plus its own run time.
    let resumed = Instant::now();
    eventually(
        "a job after the resume",
        idle_wait + script.sleep,
        || async { (script.done() > done_after_drain).then_some(()) },
    )
    .await;
    eventually("every job", Duration::from_secs(10), || async {
        (script.done() == 30).then_some(())
    })
    .await;
    assert!(resumed.elapsed() < Duration::from_secs(10));
    w.stop().await;
    let stats = q.stats("default").await.unwrap();
    assert_eq!((stats.failed, stats.paused), (0, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_cap_holds_across_every_worker() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    q.set_concurrency("default", Some(3)).await.unwrap();
    assert_eq!(q.controls("default").await.unwrap().concurrency, Some(3));
    // One handler shared by two workers counts the jobs running in both.
    let script = Arc::new(Script {
        sleep: Duration::from_millis(40),
        ..Script::default()
    });
    let mut s = settings(&[("default", 1)]);
    s.concurrency = 8;
    let a = start(&q, s.clone(), "t", script.clone());
    let b = start(&q, s, "t", script.clone());
    for n in 0..30 {
        q.enqueue(job(n)).await.unwrap();
    }
    eventually("30 jobs", Duration::from_secs(20), || async {
        (script.done() == 30).then_some(())
    })
    .await;
    a.stop().await;
    b.stop().await;
    assert_eq!(
        script.max_running.load(Ordering::SeqCst),
        3,
        "16 slots between two workers, never more than the cap of 3 jobs at once, and the cap is reached"
    );
    q.set_concurrency("default", None).await.unwrap();
    assert_eq!(q.controls("default").await.unwrap().concurrency, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_delays_jobs_and_fails_none() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    // 5 per 500 ms: a burst of 5, then one every 100 ms.
    let rate: RateLimit = "5/500ms".parse().unwrap();
    q.set_rate("default", Some(rate)).await.unwrap();
    assert_eq!(q.controls("default").await.unwrap().rate, Some(rate));
    let interval = rate.per / rate.jobs;
    for n in 0..15 {
        q.enqueue(job(n)).await.unwrap();
    }
    let script = Arc::new(Script::default());
    let before = Instant::now();
    let w = start(&q, settings(&[("default", 1)]), "t", script.clone());
    eventually("15 jobs", Duration::from_secs(20), || async {
        (script.done() == 15).then_some(())
    })
    .await;
    w.stop().await;
    let mut finished: Vec<Duration> = script
        .runs()
        .iter()
        .map(|(_, _, at)| at.duration_since(before))
        .collect();
    finished.sort();
    // The k-th job (from 0) starts no sooner than (k - 4) intervals after
    // the first fetch, which came after `before`.
    for (k, at) in finished.iter().enumerate() {
        let earliest = interval * u32::try_from(k.saturating_sub(4)).unwrap();
        assert!(
            *at >= earliest,
            "job {k} ran at {at:?}, before {earliest:?}"
        );
    }
    assert!(script.runs().iter().all(|(_, attempt, _)| *attempt == 1));
    let s = q.stats("default").await.unwrap();
    assert_eq!((s.processed, s.failed, s.dead), (15, 0, 0));

    // Held back, a fetch says for how long; without a limit it is not.
    q.set_rate("default", Some("1/1h".parse().unwrap()))
        .await
        .unwrap();
    q.enqueue(job(100)).await.unwrap();
    q.enqueue(job(101)).await.unwrap();
    let first = q
        .fetch_batch("default", Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!(first.jobs.len(), 1, "a burst of one");
    let held = q
        .fetch_batch("default", Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert!(held.jobs.is_empty());
    match held.held_back {
        Some(HeldBack::RateLimited(after)) => {
            assert!(after > Duration::from_secs(3500) && after <= Duration::from_secs(3600));
        }
        other => panic!("expected a rate limit, got {other:?}"),
    }
    q.set_rate("default", None).await.unwrap();
    let free = q
        .fetch_batch("default", Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!((free.jobs.len(), free.held_back), (1, None));
}

#[test]
fn rates_parse_from_what_an_operator_types() {
    let ms = |s: &str| s.parse::<RateLimit>().map(|r| (r.jobs, r.per.as_millis()));
    assert_eq!(ms("100/s"), Ok((100, 1_000)));
    assert_eq!(ms("6000/m"), Ok((6000, 60_000)));
    assert_eq!(ms("10/1500ms"), Ok((10, 1_500)));
    assert_eq!(ms("50/2s"), Ok((50, 2_000)));
    assert_eq!(ms("1000/h"), Ok((1000, 3_600_000)));
    for bad in [
        "", "100", "0/s", "10/0s", "10/2d", "x/s", "10/s/s", "10/25h",
    ] {
        assert!(ms(bad).is_err(), "{bad:?} is refused");
    }
}

#[tokio::test]
async fn listings_page_through_each_state_in_order_without_repeats() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let mut pending = Vec::new();
    for n in 0..5 {
        pending.push(q.enqueue(job(n)).await.unwrap().to_string());
    }
    let page = q.list("default", JobState::Pending, None, 2).await.unwrap();
    let ids: Vec<_> = page.jobs.iter().map(|j| j.id.clone()).collect();
    assert_eq!(ids, pending[..2], "oldest first");
    assert_eq!(page.jobs[0].payload["n"], 0);
    assert_eq!(page.jobs[0].kind, "t");
    // The page's jobs start meanwhile: the next page begins at the head.
    let leased = q
        .fetch_many("default", Duration::from_secs(30), 2)
        .await
        .unwrap();
    assert_eq!(leased.len(), 2);
    let page2 = q
        .list("default", JobState::Pending, page.next.as_deref(), 2)
        .await
        .unwrap();
    let page3 = q
        .list("default", JobState::Pending, page2.next.as_deref(), 2)
        .await
        .unwrap();
    let rest: Vec<_> = page2
        .jobs
        .iter()
        .chain(&page3.jobs)
        .map(|j| j.id.clone())
        .collect();
    assert_eq!(rest, pending[2..]);
    assert_eq!(page3.next, None, "the last page says so");
    let active = q.list("default", JobState::Active, None, 10).await.unwrap();
    assert_eq!(active.jobs.len(), 2);

    // Seven jobs due at the same moment: ties are ordered by id and paged
    // without a repeat or a gap; then one due earlier comes first.
    let at = Utc::now() + chrono::Duration::hours(1);
    let mut scheduled = Vec::new();
    for n in 10..17 {
        scheduled.push(q.enqueue(job(n).run_at(at)).await.unwrap().to_string());
    }
    let early = q
        .enqueue(job(9).run_at(at - chrono::Duration::minutes(5)))
        .await
        .unwrap()
        .to_string();
    scheduled.sort();
    scheduled.insert(0, early);
    let mut seen = Vec::new();
    let mut cursor = None;
    for _ in 0..10 {
        let page = q
            .list("default", JobState::Scheduled, cursor.as_deref(), 3)
            .await
            .unwrap();
        seen.extend(page.jobs.iter().map(|j| j.id.clone()));
        assert!(
            page.jobs
                .iter()
                .all(|j| j.state == JobState::Scheduled && j.at_ms > 0)
        );
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, scheduled);

    // Dead jobs: newest first, with their error.
    for lease in &leased {
        let out = q
            .fail("default", lease.lease(), "smtp said 550", None)
            .await
            .unwrap();
        assert_eq!(out, FailOutcome::Dead);
    }
    let dead = q.list("default", JobState::Dead, None, 1).await.unwrap();
    assert_eq!(dead.jobs.len(), 1);
    assert_eq!(dead.jobs[0].last_error.as_deref(), Some("smtp said 550"));
    let older = q
        .list("default", JobState::Dead, dead.next.as_deref(), 1)
        .await
        .unwrap();
    assert_eq!(older.jobs.len(), 1);
    assert!(older.jobs[0].at_ms <= dead.jobs[0].at_ms);
    assert_ne!(older.jobs[0].id, dead.jobs[0].id);
    assert_eq!(older.next, None);

    // A cursor of another state, a made-up one, a bad queue name: refused.
    let wrong = [
        ("default", JobState::Pending, dead.next.clone()),
        ("default", JobState::Dead, Some("p:abc".to_owned())),
        (
            "default",
            JobState::Retry,
            Some("z:notanumber:x".to_owned()),
        ),
        ("Not A Queue", JobState::Pending, None),
    ];
    for (queue, state, cursor) in wrong {
        let e = q
            .list(queue, state, cursor.as_deref(), 5)
            .await
            .unwrap_err();
        assert!(matches!(e, QueueError::Invalid(_)), "{e:?}");
    }
}

//! Leases: recovery after a dead worker, fencing of stale holders, heartbeats.

use crate::helpers::*;

#[tokio::test]
async fn a_job_whose_worker_died_runs_again_after_its_lease() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    q.enqueue(job(1)).await.unwrap();
    // A "worker" leases the job and dies without a word.
    let leased = q
        .fetch("default", Duration::from_millis(300))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leased.attempt, 1);
    let script = Arc::new(Script::default());
    let w = start(&q, settings(&[("default", 1)]), "t", script.clone());
    eventually("the recovered job", Duration::from_secs(10), || async {
        (script.done() == 1).then_some(())
    })
    .await;
    w.stop().await;
    assert_eq!(script.runs()[0].1, 2, "the second attempt");
}

#[tokio::test]
async fn a_stale_lease_holder_cannot_change_the_job_of_the_new_holder() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let id = q
        .enqueue(job(1).unique("stale:1", Duration::from_secs(600)))
        .await
        .unwrap();
    // Worker A leases the job, then stalls: its lease runs out, is recovered,
    // and worker B fetches the job.
    let a = q
        .fetch("default", Duration::from_millis(50))
        .await
        .unwrap()
        .unwrap();
    expire_and_recover(&redis, &q, &id).await;
    let b = eventually("worker B to fetch it", Duration::from_secs(5), || async {
        q.forward("default").await.unwrap();
        q.fetch("default", Duration::from_secs(30)).await.unwrap()
    })
    .await;
    assert_eq!((b.id, b.attempt), (id, 2));
    assert!(b.token > a.token, "a fresh fencing number");
    let before = (
        job_hash(&redis, &id).await,
        lease_deadline(&redis, &id).await,
    );

    // A wakes up and tries everything it could do with its old lease.
    let lost = q
        .heartbeat("default", &[a.lease()], Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(lost, [a.lease()], "A's heartbeat reports the lease lost");
    assert_eq!(
        q.complete("default", a.lease()).await.unwrap(),
        LeaseOutcome::LeaseLost
    );
    assert_eq!(
        q.fail("default", a.lease(), "late", Some(Duration::ZERO))
            .await
            .unwrap(),
        FailOutcome::LeaseLost
    );
    assert_eq!(
        q.fail("default", a.lease(), "late", None).await.unwrap(),
        FailOutcome::LeaseLost
    );
    assert_eq!(
        q.requeue("default", a.lease()).await.unwrap(),
        LeaseOutcome::LeaseLost
    );

    // B's job is untouched: active under B's lease, same deadline, same
    // attempt, unique key held.
    let after = (
        job_hash(&redis, &id).await,
        lease_deadline(&redis, &id).await,
    );
    assert_eq!(before, after);
    let (fields, _) = after;
    assert_eq!(fields["state"], "active");
    assert_eq!(fields["lease"], b.token.to_string());
    assert_eq!(fields["attempt"], "2");
    assert_eq!(
        unique_holder(&redis, "stale:1").await.0,
        Some(id.to_string())
    );
    let s = q.stats("default").await.unwrap();
    assert_eq!(
        (s.active, s.pending, s.retry, s.dead, s.processed),
        (1, 0, 0, 0, 0)
    );
    assert!(matches!(
        q.enqueue(job(2).unique("stale:1", Duration::from_secs(600)))
            .await,
        Err(EnqueueJobError::Duplicate { .. })
    ));

    // B's lease works.
    assert!(
        q.heartbeat("default", &[b.lease()], Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        q.complete("default", b.lease()).await.unwrap(),
        LeaseOutcome::Applied
    );
    assert_eq!(unique_holder(&redis, "stale:1").await.0, None);
}

/// Stalls forever on its first attempt; later attempts succeed.
#[derive(Default)]
struct StallFirst {
    running: AtomicUsize,
    attempts: Mutex<Vec<(u32, Instant)>>,
}

#[async_trait]
impl JobHandler for StallFirst {
    async fn handle(&self, job: &JobContext) -> Result<(), JobFailure> {
        self.attempts
            .lock()
            .unwrap()
            .push((job.attempt, Instant::now()));
        if job.attempt == 1 {
            self.running.fetch_add(1, Ordering::SeqCst);
            let _guard = Leaving(&self.running);
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_handler_whose_lease_is_lost_is_cancelled_by_the_heartbeat() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let handler = Arc::new(StallFirst::default());
    let mut s = settings(&[("default", 1)]);
    // One slot, and no recoverer of its own: the lease is taken away by
    // "another worker" (the test) below.
    s.concurrency = 1;
    s.recover_every = Duration::from_secs(3600);
    let w = start(&q, s, "t", handler.clone());
    let id = q.enqueue(job(1)).await.unwrap();
    eventually(
        "the first attempt to run",
        Duration::from_secs(10),
        || async { (handler.running.load(Ordering::SeqCst) == 1).then_some(()) },
    )
    .await;
    expire_and_recover(&redis, &q, &id).await;
    // The heartbeat finds the lease lost and drops the stalled handler,
    // which frees the worker's only slot for the second attempt.
    eventually("the second attempt", Duration::from_secs(10), || async {
        (handler.attempts.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    assert_eq!(
        handler.running.load(Ordering::SeqCst),
        0,
        "the stalled handler was cancelled"
    );
    let s = eventually("the job to complete", Duration::from_secs(10), || async {
        let s = q.stats("default").await.unwrap();
        (s.processed == 1).then_some(s)
    })
    .await;
    w.stop().await;
    assert_eq!(
        (s.active, s.pending, s.retry, s.dead, s.failed),
        (0, 0, 0, 0, 1),
        "the lost attempt recorded nothing of its own"
    );
}

/// Panics when dropped (outside any `catch_unwind`), unless already unwinding.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("the handler's future panicked while being dropped");
        }
    }
}

/// On its first attempt, holds a `Bomb` across a long sleep; a timeout then
/// drops the future and the bomb goes off. Later attempts succeed.
#[derive(Default)]
struct PanicOnDrop {
    attempts: Mutex<Vec<u32>>,
}

#[async_trait]
impl JobHandler for PanicOnDrop {
    async fn handle(&self, job: &JobContext) -> Result<(), JobFailure> {
        self.attempts.lock().unwrap().push(job.attempt);
        if job.attempt == 1 {
            let bomb = Bomb;
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(bomb);
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_panic_outside_the_handler_does_not_keep_its_lease_alive() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let handler = Arc::new(PanicOnDrop::default());
    let w = start(&q, settings(&[("default", 1)]), "t", handler.clone());
    q.enqueue(job(1).timeout(Duration::from_millis(200)))
        .await
        .unwrap();
    // The heartbeat stops for the panicked task, so the lease ends and the
    // job is recovered and run again.
    eventually("the second attempt", Duration::from_secs(10), || async {
        (handler.attempts.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    let s = eventually("the job to complete", Duration::from_secs(10), || async {
        let s = q.stats("default").await.unwrap();
        (s.processed == 1).then_some(s)
    })
    .await;
    w.stop().await;
    assert_eq!(*handler.attempts.lock().unwrap(), [1, 2]);
    assert_eq!((s.active, s.retry, s.dead), (0, 0, 0));
}

#[tokio::test]
async fn a_recovered_job_waits_for_its_backoff_before_running_again() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    q.enqueue(job(1)).await.unwrap();
    // A "worker" leases the job and dies without a word.
    let fetched = Instant::now();
    q.fetch("default", Duration::from_millis(100))
        .await
        .unwrap()
        .unwrap();
    let script = Arc::new(Script::default());
    let mut s = settings(&[("default", 1)]);
    // The first retry waits 500 to 1000 ms.
    s.retry_base = Duration::from_millis(1000);
    s.retry_cap = Duration::from_millis(1000);
    let w = start(&q, s, "t", script.clone());
    eventually("the recovered job", Duration::from_secs(10), || async {
        (script.done() == 1).then_some(())
    })
    .await;
    w.stop().await;
    let (_, attempt, ran) = script.runs()[0];
    assert_eq!(attempt, 2);
    let after = ran - fetched;
    assert!(
        after >= Duration::from_millis(600),
        "ran {after:?} after the lease began: 100 ms lease + at least 500 ms backoff"
    );
}

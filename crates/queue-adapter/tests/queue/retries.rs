//! Failures: retries and their backoff, the dead set, panics, timeouts.

use crate::helpers::*;

#[tokio::test]
async fn a_failing_job_is_retried_with_backoff_until_it_succeeds() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let script = Arc::new(Script {
        fail_first: HashMap::from([(1, 2)]),
        ..Script::default()
    });
    let w = start(&q, settings(&[("default", 1)]), "t", script.clone());
    q.enqueue(job(1)).await.unwrap();
    eventually("the third attempt", Duration::from_secs(10), || async {
        (script.done() == 1).then_some(())
    })
    .await;
    w.stop().await;
    assert_eq!(script.runs()[0].1, 3, "succeeded on attempt 3");
    let s = q.stats("default").await.unwrap();
    assert_eq!((s.processed, s.failed, s.retry, s.dead), (1, 2, 0, 0));
}

/// Asks to be retried no sooner than `after` on its first attempt.
struct RetryAfter {
    after: Duration,
    attempts: Mutex<Vec<(u32, Instant)>>,
}

#[async_trait]
impl JobHandler for RetryAfter {
    async fn handle(&self, job: &JobContext) -> Result<(), JobFailure> {
        self.attempts
            .lock()
            .unwrap()
            .push((job.attempt, Instant::now()));
        if job.attempt == 1 {
            return Err(JobFailure::Retry {
                error: "come back later".into(),
                after: Some(self.after),
            });
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_retry_is_never_sooner_than_the_handler_asked() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let handler = Arc::new(RetryAfter {
        // Far above the 40-200 ms backoff of these settings.
        after: Duration::from_millis(1500),
        attempts: Mutex::new(Vec::new()),
    });
    let w = start(&q, settings(&[("default", 1)]), "t", handler.clone());
    q.enqueue(job(1)).await.unwrap();
    eventually("the second attempt", Duration::from_secs(10), || async {
        (handler.attempts.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    w.stop().await;
    let attempts = handler.attempts.lock().unwrap().clone();
    assert_eq!((attempts[0].0, attempts[1].0), (1, 2));
    let waited = attempts[1].1 - attempts[0].1;
    assert!(
        waited >= Duration::from_millis(1500),
        "retried after {waited:?}"
    );
    let s = q.stats("default").await.unwrap();
    assert_eq!((s.processed, s.failed, s.retry), (1, 1, 0));
}

#[tokio::test]
async fn past_max_retries_a_job_is_dead_with_its_last_error() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let script = Arc::new(Script {
        always_fail: true,
        ..Script::default()
    });
    let w = start(&q, settings(&[("default", 1)]), "t", script.clone());
    let id = q.enqueue(job(1).max_retries(2)).await.unwrap();
    let dead = eventually("the dead job", Duration::from_secs(10), || async {
        let d = q.dead(None, 10).await.unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await;
    w.stop().await;
    assert_eq!(dead[0].id, id.to_string());
    assert_eq!(dead[0].attempts, 3, "one attempt plus two retries");
    assert_eq!(dead[0].last_error, "boom on attempt 3");
    assert_eq!(q.stats("default").await.unwrap().dead, 1);
}

#[tokio::test]
async fn a_permanent_failure_goes_straight_to_the_dead_set() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let script = Arc::new(Script {
        permanent: true,
        ..Script::default()
    });
    let w = start(&q, settings(&[("default", 1)]), "t", script.clone());
    q.enqueue(job(1).max_retries(10)).await.unwrap();
    let dead = eventually("the dead job", Duration::from_secs(10), || async {
        let d = q.dead(Some("default"), 10).await.unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await;
    w.stop().await;
    assert_eq!(
        (dead[0].attempts, dead[0].last_error.as_str()),
        (1, "bad payload")
    );
}

#[tokio::test]
async fn a_panicking_handler_is_a_failed_attempt_not_a_dead_worker() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let script = Arc::new(Script {
        panic_first: true,
        ..Script::default()
    });
    let w = start(&q, settings(&[("default", 1)]), "t", script.clone());
    q.enqueue(job(1)).await.unwrap();
    q.enqueue(job(2)).await.unwrap();
    eventually(
        "both jobs on their second attempt",
        Duration::from_secs(10),
        || async { (script.done() == 2).then_some(()) },
    )
    .await;
    w.stop().await;
    assert!(script.runs().iter().all(|(_, attempt, _)| *attempt == 2));
}

#[tokio::test]
async fn a_job_that_runs_past_its_timeout_is_cancelled_and_fails() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let script = Arc::new(Script {
        sleep: Duration::from_secs(30),
        ..Script::default()
    });
    let w = start(&q, settings(&[("default", 1)]), "t", script.clone());
    let started = Instant::now();
    q.enqueue(job(1).timeout(Duration::from_millis(200)).max_retries(0))
        .await
        .unwrap();
    let dead = eventually("the timed-out job", Duration::from_secs(10), || async {
        let d = q.dead(None, 1).await.unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        dead[0].last_error.contains("timed out"),
        "{}",
        dead[0].last_error
    );
    assert_eq!(
        script.running.load(Ordering::SeqCst),
        0,
        "the handler future was dropped"
    );
    w.stop().await;
}

#[tokio::test]
async fn a_retried_job_does_not_run_before_its_backoff_elapses() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    // No Retry-After of its own: the worker's backoff alone decides.
    let handler = Arc::new(RetryAfter {
        after: Duration::ZERO,
        attempts: Mutex::new(Vec::new()),
    });
    let mut s = settings(&[("default", 1)]);
    // The first retry waits 400 to 800 ms.
    s.retry_base = Duration::from_millis(800);
    s.retry_cap = Duration::from_millis(800);
    let w = start(&q, s, "t", handler.clone());
    q.enqueue(job(1)).await.unwrap();
    eventually("the second attempt", Duration::from_secs(10), || async {
        (handler.attempts.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    w.stop().await;
    let attempts = handler.attempts.lock().unwrap().clone();
    let waited = attempts[1].1 - attempts[0].1;
    assert!(
        waited >= Duration::from_millis(400),
        "retried after {waited:?}, before the backoff"
    );
}

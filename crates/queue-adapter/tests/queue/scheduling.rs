//! Scheduled and periodic jobs.

use crate::helpers::*;

#[tokio::test]
async fn scheduled_jobs_do_not_run_early() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let script = Arc::new(Script::default());
    let w = start(&q, settings(&[("default", 1)]), "t", script.clone());
    let at = Utc::now() + chrono::Duration::milliseconds(1200);
    let enqueued = Instant::now();
    q.enqueue(job(1).run_at(at)).await.unwrap();
    assert_eq!(q.stats("default").await.unwrap().scheduled, 1);
    eventually("the scheduled job", Duration::from_secs(10), || async {
        (script.done() == 1).then_some(())
    })
    .await;
    w.stop().await;
    let ran_after = script.runs()[0].2 - enqueued;
    assert!(
        ran_after >= Duration::from_millis(1150),
        "ran after {ran_after:?}"
    );
}

#[tokio::test]
async fn periodic_jobs_run_once_per_tick_with_two_workers() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let script = Arc::new(Script::default());
    let mut workers = Vec::new();
    for _ in 0..2 {
        let mut w = JobWorker::new(q.clone(), settings(&[("default", 1)]));
        w.handle("t", script.clone());
        w.periodic("every-second", "* * * * * *", job(7)).unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        workers.push(Running {
            stop,
            task: tokio::spawn(async move { w.run(token).await }),
        });
    }
    let started = Instant::now();
    eventually("three ticks", Duration::from_secs(10), || async {
        (script.done() >= 3).then_some(())
    })
    .await;
    let elapsed = started.elapsed();
    for w in workers {
        w.stop().await;
    }
    let runs = script.done();
    assert!(
        runs as u64 <= elapsed.as_secs() + 2,
        "{runs} runs in {elapsed:?}: some tick ran twice"
    );
}

#[tokio::test]
async fn a_periodic_tick_is_enqueued_once_however_often_it_is_tried() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let first = q.enqueue_tick("report", 1000, job(1)).await.unwrap();
    assert!(matches!(first, TickOutcome::Enqueued(_)));
    assert_eq!(
        q.enqueue_tick("report", 1000, job(1)).await.unwrap(),
        TickOutcome::AlreadyEnqueued
    );
    assert!(matches!(
        q.enqueue_tick("report", 1001, job(1)).await.unwrap(),
        TickOutcome::Enqueued(_)
    ));
    assert_eq!(q.stats("default").await.unwrap().pending, 2);

    // A tick refused by the job's own unique key is not claimed, so it can
    // be tried again once the key is free.
    let unique = || job(2).unique("report-run", Duration::from_secs(600));
    let TickOutcome::Enqueued(running) = q.enqueue_tick("unique", 1, unique()).await.unwrap()
    else {
        panic!("tick 1 not enqueued");
    };
    assert!(matches!(
        q.enqueue_tick("unique", 2, unique()).await,
        Err(EnqueueJobError::Duplicate { .. })
    ));
    assert!(q.delete(&running.to_string()).await.unwrap());
    assert!(matches!(
        q.enqueue_tick("unique", 2, unique()).await.unwrap(),
        TickOutcome::Enqueued(_)
    ));
}

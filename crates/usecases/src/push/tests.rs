use super::*;
use domain::ProfileDefaults;
use ports::JobHandler as _;
use ports_testing::{InMemoryStore, PushOutcome, RecordingJobQueue, RecordingPushSender};

fn uid(s: &str) -> FirebaseUid {
    FirebaseUid::parse(s).unwrap()
}

fn token(s: &str) -> PushToken {
    PushToken::parse(s).unwrap()
}

async fn store_with(tokens: &[&str]) -> Arc<InMemoryStore> {
    let store = Arc::new(InMemoryStore::new());
    for t in tokens {
        store
            .register(
                &uid("ada"),
                &token(t),
                Platform::Android,
                &ProfileDefaults::default(),
            )
            .await
            .unwrap();
    }
    store
}

fn ctx(kind: &str, payload: serde_json::Value) -> JobContext {
    JobContext {
        id: JobId::new(),
        kind: kind.into(),
        version: 1,
        payload,
        queue: PUSH_QUEUE.into(),
        attempt: 1,
        max_retries: 3,
        lease: 1,
    }
}

fn hello() -> PushMessage {
    PushMessage {
        title: Some("Hi".into()),
        ..PushMessage::default()
    }
}

#[tokio::test]
async fn notify_user_queues_one_job_and_refuses_oversize_messages_up_front() {
    let jobs = Arc::new(RecordingJobQueue::new());
    let push = PushNotifications::new(
        store_with(&[]).await,
        Arc::new(RecordingPushSender::new()),
        jobs.clone(),
    );
    push.notify_user(&uid("ada"), hello()).await.unwrap();
    let queued = jobs.jobs();
    assert_eq!(queued.len(), 1);
    assert_eq!(
        (queued[0].1.kind.as_str(), queued[0].1.queue.as_str()),
        (PushSendJob::KIND, PUSH_QUEUE)
    );
    let big = PushMessage {
        body: Some("x".repeat(5000)),
        ..PushMessage::default()
    };
    assert!(matches!(
        push.notify_user(&uid("ada"), big).await,
        Err(NotifyUserError::TooLarge { max: 4096, .. })
    ));
    assert_eq!(jobs.jobs().len(), 1);
}

#[tokio::test]
async fn the_fan_out_queues_one_unique_device_job_per_token() {
    let store = store_with(&["a", "b", "c"]).await;
    let jobs = Arc::new(RecordingJobQueue::new());
    let fan = FanOutPush::new(store, jobs.clone());
    let job = ctx(
        PushSendJob::KIND,
        serde_json::to_value(PushSendJob {
            uid: uid("ada"),
            message: hello(),
        })
        .unwrap(),
    );
    ports::Typed(Arc::new(fan.clone()))
        .handle(&job)
        .await
        .unwrap();
    // A rerun of the same job adds nothing while those are queued.
    ports::Typed(Arc::new(fan.clone()))
        .handle(&job)
        .await
        .unwrap();
    let queued = jobs.jobs();
    assert_eq!(queued.len(), 3);
    let mut targets: Vec<String> = queued
        .iter()
        .map(|(_, j)| {
            assert_eq!(j.kind, PushDeviceJob::KIND);
            j.payload["token"].as_str().unwrap().to_owned()
        })
        .collect();
    targets.sort();
    assert_eq!(targets, ["a", "b", "c"]);
}

#[tokio::test]
async fn device_jobs_prune_dead_tokens_retry_when_asked_and_give_up_on_refusals() {
    let store = store_with(&["live", "dead", "busy", "quota"]).await;
    let sender = Arc::new(RecordingPushSender::new());
    sender.script(&token("dead"), [PushOutcome::Unregistered]);
    sender.script(
        &token("busy"),
        [PushOutcome::Unavailable {
            retry_after: Some(Duration::from_secs(2)),
        }],
    );
    sender.script(
        &token("quota"),
        [PushOutcome::Rejected {
            code: "QUOTA_EXCEEDED".into(),
        }],
    );
    let h = SendPushToDevice::new(sender.clone(), store.clone());
    let run = |t: &str| {
        ctx(
            PushDeviceJob::KIND,
            serde_json::to_value(PushDeviceJob {
                uid: uid("ada"),
                token: token(t),
                message: hello(),
            })
            .unwrap(),
        )
    };
    ports::Typed(Arc::new(h.clone()))
        .handle(&run("live"))
        .await
        .unwrap();
    ports::Typed(Arc::new(h.clone()))
        .handle(&run("dead"))
        .await
        .unwrap();
    assert_eq!(
        ports::Typed(Arc::new(h.clone()))
            .handle(&run("busy"))
            .await
            .unwrap_err(),
        JobFailure::Retry {
            error: format!(
                "push provider unavailable (device {})",
                token("busy").fingerprint()
            ),
            after: Some(Duration::from_secs(2)),
        }
    );
    assert!(matches!(
        ports::Typed(Arc::new(h.clone())).handle(&run("quota")).await.unwrap_err(),
        JobFailure::Permanent { error } if error.contains("QUOTA_EXCEEDED")
    ));
    // The retry succeeds; the dead token is gone, the others stay.
    ports::Typed(Arc::new(h.clone()))
        .handle(&run("busy"))
        .await
        .unwrap();
    let left: Vec<String> = store
        .list_for_user(&uid("ada"), None, 100)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|r| r.token.as_str().to_owned())
        .collect();
    assert_eq!(left, ["live", "busy", "quota"]);
    let sent: Vec<String> = sender
        .sent()
        .into_iter()
        .map(|(t, _)| t.as_str().to_owned())
        .collect();
    assert_eq!(sent, ["live", "busy"]);
}

#[tokio::test]
async fn the_test_push_reports_each_device_most_recently_seen_first() {
    let store = store_with(&["one", "two", "gone"]).await;
    let sender = Arc::new(RecordingPushSender::new());
    sender.script(&token("gone"), [PushOutcome::InvalidToken]);
    let push = PushNotifications::new(
        store.clone(),
        sender.clone(),
        Arc::new(RecordingJobQueue::new()),
    );
    let caller = VerifiedIdentity::new(uid("ada"));
    let report = push.send_test(&caller).await.unwrap();
    assert_eq!(report.skipped, 0);
    let got: Vec<(&str, DeliveryOutcome, Option<&str>)> = report
        .deliveries
        .iter()
        .map(|d| (d.token.as_str(), d.outcome, d.code.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("gone", DeliveryOutcome::Pruned, Some("INVALID_TOKEN")),
            ("two", DeliveryOutcome::Sent, None),
            ("one", DeliveryOutcome::Sent, None),
        ]
    );
    assert_eq!(sender.sent()[0].1, test_message());
    assert_eq!(
        store
            .list_for_user(&uid("ada"), None, 100)
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    // Someone without devices gets an empty report.
    let nobody = VerifiedIdentity::new(uid("nobody"));
    let empty = push.send_test(&nobody).await.unwrap();
    assert!(empty.deliveries.is_empty());
    assert_eq!(empty.skipped, 0);
}

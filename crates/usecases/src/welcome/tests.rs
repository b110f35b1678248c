use super::*;
use domain::{ProfileDefaults, ProfilePatch};
use ports::{JobHandler as _, JobId, Typed};
use ports_testing::{
    InMemoryStore, InMemoryWelcomeLedger, MailOutcome, RecordingJobQueue, RecordingMailer,
};

fn uid(s: &str) -> FirebaseUid {
    FirebaseUid::parse(s).unwrap()
}

fn email(s: &str) -> Email {
    Email::parse(s).unwrap()
}

/// A user created in `store` by a token that vouched for `verified` (or
/// for nothing), with `typed` as the profile's own address; returns the
/// store and the `UserCreated` event it appended.
async fn signed_up(
    typed: Option<&str>,
    verified: Option<&str>,
) -> (Arc<InMemoryStore>, EventEnvelope) {
    let store = Arc::new(InMemoryStore::new());
    store
        .upsert_profile(
            &uid("u"),
            &ProfilePatch {
                email: typed.map(email),
                ..ProfilePatch::default()
            },
            &ProfileDefaults {
                display_name: Some(DisplayName::parse("Ada").unwrap()),
                verified_email: verified.map(email),
                ..ProfileDefaults::default()
            },
        )
        .await
        .unwrap();
    let event = store.events().pop().unwrap();
    assert!(matches!(event.event, DomainEvent::UserCreated(_)));
    (store, event)
}

#[tokio::test]
async fn a_verified_new_user_gets_one_unique_welcome_job() {
    let jobs = Arc::new(RecordingJobQueue::new());
    let (store, event) = signed_up(Some("typed@example.com"), Some("ada@example.com")).await;
    let trigger = WelcomeMailTrigger::new(jobs.clone(), store);
    trigger.handle(&event).await.unwrap();
    trigger.handle(&event).await.unwrap();
    let queued = jobs.jobs();
    assert_eq!(
        queued.len(),
        1,
        "the duplicate is refused by the unique key"
    );
    let job = &queued[0].1;
    assert_eq!(
        (job.kind.as_str(), job.queue.as_str(), job.version),
        (WelcomeMailJob::KIND, MAIL_QUEUE, 2)
    );
    let payload: WelcomeMailJob = serde_json::from_value(job.payload.clone()).unwrap();
    assert_eq!(
        payload.email.as_str(),
        "ada@example.com",
        "the verified one, read from the table (the event has none)"
    );
    assert_eq!(payload.display_name.unwrap().as_str(), "Ada");
    assert_eq!(payload.uid, uid("u"));
}

#[tokio::test]
async fn a_typed_or_unverified_address_gets_no_job_until_it_is_verified() {
    let jobs = Arc::new(RecordingJobQueue::new());
    let (store, event) = signed_up(Some("victim@example.com"), None).await;
    let trigger = WelcomeMailTrigger::new(jobs.clone(), store.clone());
    trigger.handle(&event).await.unwrap();
    assert!(jobs.jobs().is_empty());
    store
        .upsert_profile(
            &uid("u"),
            &ProfilePatch::default(),
            &ProfileDefaults {
                verified_email: Some(email("me@example.com")),
                ..ProfileDefaults::default()
            },
        )
        .await
        .unwrap();
    let verified = store.events().pop().unwrap();
    assert!(trigger.handles(&verified.event));
    trigger.handle(&verified).await.unwrap();
    let queued = jobs.jobs();
    assert_eq!(queued.len(), 1);
    let payload: WelcomeMailJob = serde_json::from_value(queued[0].1.payload.clone()).unwrap();
    assert_eq!(payload.email.as_str(), "me@example.com");
}

#[tokio::test]
async fn an_event_of_an_account_deleted_since_starts_no_job() {
    let jobs = Arc::new(RecordingJobQueue::new());
    let (store, event) = signed_up(None, Some("ada@example.com")).await;
    store.delete_by_uid(&uid("u")).await.unwrap();
    let trigger = WelcomeMailTrigger::new(jobs.clone(), store.clone());
    trigger.handle(&event).await.unwrap();
    assert!(jobs.jobs().is_empty());
}

fn job_for(payload: &WelcomeMailJob, id: JobId, lease: u64) -> JobContext {
    JobContext {
        id,
        kind: WelcomeMailJob::KIND.into(),
        version: WelcomeMailJob::VERSION,
        payload: serde_json::to_value(payload).unwrap(),
        queue: MAIL_QUEUE.into(),
        attempt: u32::try_from(lease).unwrap(),
        max_retries: 5,
        lease,
    }
}

fn payload(user: &str, to: &str) -> WelcomeMailJob {
    WelcomeMailJob {
        user_id: UserId::new(),
        uid: uid(user),
        email: email(to),
        display_name: Some(DisplayName::parse("Ada").unwrap()),
    }
}

/// The handler as the worker runs it (payload decoded by `Typed`).
fn handler() -> (Typed<SendWelcomeMail>, Arc<RecordingMailer>) {
    let mailer = Arc::new(RecordingMailer::new());
    let handler = SendWelcomeMail::new(mailer.clone(), Arc::new(InMemoryWelcomeLedger::new()));
    (Typed(Arc::new(handler)), mailer)
}

#[tokio::test]
async fn a_uid_gets_one_mail_ever_however_many_jobs_and_accounts() {
    let (handler, mailer) = handler();
    for round in 0..3 {
        // A new account for the same uid each round: a new user id and job.
        let p = payload("ada", "ada@example.com");
        handler.handle(&job_for(&p, JobId::new(), 1)).await.unwrap();
        assert_eq!(mailer.sent().len(), 1, "round {round}");
    }
    match &mailer.sent()[0] {
        Mail::Welcome(w) => assert_eq!(w.greeting_name(), "Ada"),
    }
}

#[tokio::test]
async fn an_address_gets_one_mail_whatever_the_uid() {
    let (handler, mailer) = handler();
    handler
        .handle(&job_for(
            &payload("one", "shared@example.com"),
            JobId::new(),
            1,
        ))
        .await
        .unwrap();
    handler
        .handle(&job_for(
            &payload("two", "Shared@example.com"),
            JobId::new(),
            1,
        ))
        .await
        .unwrap();
    assert_eq!(mailer.sent().len(), 1);
}

#[tokio::test]
async fn another_job_waits_while_a_send_is_in_flight_but_a_recovered_lease_goes_at_once() {
    let mailer = Arc::new(RecordingMailer::new());
    let ledger = Arc::new(InMemoryWelcomeLedger::new());
    let handler = Typed(Arc::new(SendWelcomeMail::new(
        mailer.clone(),
        ledger.clone(),
    )));
    let p = payload("ada", "ada@example.com");
    // A worker claimed the send under lease 1 of this job, then died.
    let job = JobId::new();
    let dead = SendHolder { job, lease: 1 };
    let claimed = ledger
        .claim(
            &p.uid,
            &p.email,
            dead,
            WELCOME_RECIPIENT_WINDOW,
            WELCOME_SENDING_TTL,
        )
        .await
        .unwrap();
    assert_eq!(claimed, ClaimWelcomeOutcome::Claimed);
    // Another job for the uid waits for it...
    match handler.handle(&job_for(&p, JobId::new(), 1)).await {
        Err(JobFailure::Retry {
            after: Some(after), ..
        }) => assert!(after > Duration::ZERO && after <= WELCOME_SENDING_TTL),
        other => panic!("expected a delayed retry, got {other:?}"),
    }
    assert!(mailer.sent().is_empty());
    // ...but the same job, recovered under lease 2, sends at once.
    handler.handle(&job_for(&p, job, 2)).await.unwrap();
    assert_eq!(mailer.sent().len(), 1);
}

#[tokio::test]
async fn smtp_failures_release_the_claim_and_become_retries_or_permanent_failures() {
    let (handler, mailer) = handler();
    mailer.script([
        MailOutcome::Unavailable("451 later".into()),
        MailOutcome::Reject("550 no such user".into()),
    ]);
    let p = payload("late", "late@example.com");
    let job = JobId::new();
    assert!(
        matches!(handler.handle(&job_for(&p, job, 1)).await, Err(JobFailure::Retry { error, .. }) if error.contains("451"))
    );
    assert!(
        matches!(handler.handle(&job_for(&p, JobId::new(), 1)).await, Err(JobFailure::Permanent { error }) if error.contains("550")),
        "released: another job may try at once"
    );
    assert!(mailer.sent().is_empty());
    handler.handle(&job_for(&p, job, 2)).await.unwrap();
    assert_eq!(
        mailer.sent().len(),
        1,
        "nothing was recorded as sent before"
    );
    let mut bad = job_for(&p, JobId::new(), 1);
    bad.payload = serde_json::json!({"nope": 1});
    assert!(matches!(
        handler.handle(&bad).await,
        Err(JobFailure::Permanent { .. })
    ));
}

#[tokio::test]
async fn a_job_from_before_verified_addresses_is_not_sent() {
    let (handler, mailer) = handler();
    let mut old = job_for(&payload("old", "old@example.com"), JobId::new(), 1);
    old.version = 1;
    old.payload = serde_json::json!({
        "user_id": UserId::new(), "email": "typed@example.com", "display_name": null
    });
    handler.handle(&old).await.unwrap();
    assert!(mailer.sent().is_empty());
}

#[tokio::test]
async fn a_down_queue_means_retry() {
    let jobs = Arc::new(RecordingJobQueue::new());
    let (store, event) = signed_up(None, Some("a@b.com")).await;
    let trigger = WelcomeMailTrigger::new(jobs.clone(), store);
    jobs.set_down(true);
    assert!(matches!(
        trigger.handle(&event).await,
        Err(HandleEventError::Retry(_))
    ));
    let deleted = DomainEvent::UserDeleted(domain::UserDeleted {
        user_id: UserId::new(),
        uid: uid("u"),
    });
    assert!(!trigger.handles(&deleted));
}

#[tokio::test]
async fn an_account_deleted_before_its_welcome_mail_went_out_gets_none() {
    let users = Arc::new(ports_testing::InMemoryStore::new());
    let mailer = Arc::new(RecordingMailer::new());
    let handler = Typed(Arc::new(
        SendWelcomeMail::new(mailer.clone(), Arc::new(InMemoryWelcomeLedger::new()))
            .with_users(users.clone()),
    ));
    let p = payload("gone", "gone@example.com");
    handler.handle(&job_for(&p, JobId::new(), 1)).await.unwrap();
    assert!(
        mailer.sent().is_empty(),
        "no account: no mail, and the job is done"
    );

    ports::UserRepository::upsert_profile(
        users.as_ref(),
        &uid("gone"),
        &domain::ProfilePatch::default(),
        &domain::ProfileDefaults::default(),
    )
    .await
    .unwrap();
    handler.handle(&job_for(&p, JobId::new(), 1)).await.unwrap();
    assert_eq!(mailer.sent().len(), 1, "an account again: the mail goes");
}

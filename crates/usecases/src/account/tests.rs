use super::*;
use chrono::Utc;
use domain::{ProfileDefaults, ProfilePatch, UserDeleted};
use ports::JobId;
use ports_testing::{
    InMemoryObjectStore, InMemoryStore, RecordingIdentityAdmin, RecordingJobQueue,
    RecordingNotifier,
};

struct Saga {
    users: Arc<InMemoryStore>,
    objects: Arc<InMemoryObjectStore>,
    notifier: Arc<RecordingNotifier>,
    queue: Arc<RecordingJobQueue>,
    identity: Arc<RecordingIdentityAdmin>,
    trigger: AccountDeletionTrigger,
    erase: EraseAccount,
}

fn saga() -> Saga {
    let users = Arc::new(InMemoryStore::new());
    let objects = Arc::new(InMemoryObjectStore::new());
    let notifier = Arc::new(RecordingNotifier::new());
    let queue = Arc::new(RecordingJobQueue::new());
    let identity = Arc::new(RecordingIdentityAdmin::new());
    Saga {
        trigger: AccountDeletionTrigger::new(queue.clone()),
        erase: EraseAccount::new(
            users.clone(),
            objects.clone(),
            notifier.clone(),
            queue.clone(),
            Some(identity.clone()),
        ),
        users,
        objects,
        notifier,
        queue,
        identity,
    }
}

fn uid(s: &str) -> FirebaseUid {
    FirebaseUid::parse(s).unwrap()
}

fn deleted(user_id: UserId, uid: &FirebaseUid) -> EventEnvelope {
    EventEnvelope::new(
        DomainEvent::UserDeleted(UserDeleted {
            user_id,
            uid: uid.clone(),
        }),
        Utc::now(),
    )
}

/// The `account:erase` jobs queued so far, in order.
fn steps(s: &Saga) -> Vec<EraseAccountJob> {
    s.queue
        .jobs()
        .into_iter()
        .filter(|(_, j)| j.kind == EraseAccountJob::KIND)
        .map(|(_, j)| serde_json::from_value(j.payload).unwrap())
        .collect()
}

fn ctx(job: &EraseAccountJob) -> JobContext {
    JobContext {
        id: JobId::new(),
        kind: EraseAccountJob::KIND.into(),
        version: 1,
        payload: serde_json::to_value(job).unwrap(),
        queue: "default".into(),
        attempt: 1,
        max_retries: STEP_RETRIES,
        lease: 1,
    }
}

#[tokio::test]
async fn a_deletion_runs_every_step_in_order_and_leaves_nothing_behind() {
    let s = saga();
    let ada = uid("ada");
    let user_id = UserId::new();
    let prefix = Upload::user_prefix(user_id);
    s.objects.put(&format!("{prefix}a"), "image/png", vec![1]);
    s.objects.put(&format!("{prefix}b"), "image/png", vec![2]);
    s.objects.put("users/someone-else/c", "image/png", vec![3]);
    s.queue
        .enqueue(
            NewJob::new("email:welcome", 2, &"x")
                .unwrap()
                .owned_by("ada"),
        )
        .await
        .unwrap();
    s.queue
        .enqueue(NewJob::new("push:send", 1, &"y").unwrap().owned_by("bob"))
        .await
        .unwrap();

    s.trigger.handle(&deleted(user_id, &ada)).await.unwrap();
    // The event delivered again starts nothing more.
    s.trigger.handle(&deleted(user_id, &ada)).await.unwrap();
    let mut ran = Vec::new();
    for _ in 0..EraseStep::ALL.len() {
        let next = steps(&s)
            .into_iter()
            .find(|j| !ran.contains(&j.step))
            .unwrap();
        s.erase.run(next.clone(), &ctx(&next)).await.unwrap();
        ran.push(next.step);
        if next.step == EraseStep::Objects {
            // A file posted with a form issued before the deletion, still
            // valid for minutes.
            s.objects
                .put(&format!("{prefix}late"), "image/png", vec![4]);
        }
    }
    assert_eq!(ran, EraseStep::ALL);
    assert_eq!(steps(&s).len(), 5, "one job per step, no step twice");
    let late = s
        .queue
        .jobs()
        .into_iter()
        .find(|(_, j)| {
            j.unique
                .as_ref()
                .is_some_and(|u| u.key.ends_with(":late_objects"))
        })
        .unwrap()
        .1;
    let swept_at = late.run_at.expect("the late sweep waits for the forms");
    let due = Utc::now() + chrono::Duration::from_std(LATE_SWEEP_AFTER).unwrap();
    assert!(
        swept_at <= due && swept_at > due - chrono::Duration::seconds(60),
        "{swept_at} vs {due}"
    );
    assert_eq!(s.objects.keys(), vec!["users/someone-else/c".to_owned()]);
    assert_eq!(s.notifier.disconnected().len(), 1);
    assert_eq!(s.notifier.disconnected()[0].0, Audience::User(ada.clone()));
    assert_eq!(
        s.notifier.forgotten(),
        vec![ada.clone()],
        "its realtime history"
    );
    let kinds: Vec<String> = s.queue.jobs().into_iter().map(|(_, j)| j.kind).collect();
    assert!(
        !kinds.contains(&"email:welcome".to_owned()),
        "ada's job went"
    );
    assert!(kinds.contains(&"push:send".to_owned()), "bob's stayed");
    assert_eq!(s.identity.deleted(), vec![ada.clone()]);

    // A step that runs again (its worker died before the ack) is harmless.
    let last = steps(&s).pop().unwrap();
    s.erase.run(last.clone(), &ctx(&last)).await.unwrap();
    assert_eq!(steps(&s).len(), 5);
}

#[tokio::test]
async fn a_failing_step_is_retried_and_the_saga_waits_for_it() {
    let s = saga();
    let ada = uid("ada");
    let job = EraseAccountJob {
        user_id: UserId::new(),
        uid: ada.clone(),
        step: EraseStep::Identity,
    };
    s.identity.set_down(true);
    let err = s.erase.run(job.clone(), &ctx(&job)).await.unwrap_err();
    assert!(matches!(err, JobFailure::Retry { .. }), "{err:?}");
    assert!(s.identity.deleted().is_empty());
    s.identity.set_down(false);
    s.erase.run(job.clone(), &ctx(&job)).await.unwrap();
    assert_eq!(s.identity.deleted(), vec![ada]);
}

#[tokio::test]
async fn a_uid_that_signed_up_again_keeps_its_new_account() {
    let s = saga();
    let ada = uid("ada");
    let again = s
        .users
        .upsert_profile(&ada, &ProfilePatch::default(), &ProfileDefaults::default())
        .await
        .unwrap()
        .user;
    let old_user = UserId::new();
    assert_ne!(again.id, old_user);
    s.queue
        .enqueue(
            NewJob::new("email:welcome", 2, &"x")
                .unwrap()
                .owned_by("ada"),
        )
        .await
        .unwrap();
    for step in [EraseStep::Sockets, EraseStep::Jobs, EraseStep::Identity] {
        let job = EraseAccountJob {
            user_id: old_user,
            uid: ada.clone(),
            step,
        };
        s.erase.run(job.clone(), &ctx(&job)).await.unwrap();
    }
    assert!(s.notifier.disconnected().is_empty());
    assert!(s.identity.deleted().is_empty());
    assert!(
        s.queue
            .jobs()
            .iter()
            .any(|(_, j)| j.kind == "email:welcome"),
        "the new account's job stays"
    );
}

#[tokio::test]
async fn tombstones_are_kept_while_a_token_from_before_could_still_be_valid() {
    let s = saga();
    let ada = uid("ada");
    s.users
        .upsert_profile(&ada, &ProfilePatch::default(), &ProfileDefaults::default())
        .await
        .unwrap();
    s.users.delete_by_uid(&ada).await.unwrap();
    let job = ForgetDeletions::new(s.users.clone());
    job.run(ForgetDeletionsJob {}, &ctx_of(ForgetDeletionsJob::KIND))
        .await
        .unwrap();
    assert!(s.users.deleted_at(&ada).await.unwrap().is_some());
    assert!(TOMBSTONE_RETENTION >= Duration::from_secs(24 * 3600));
}

fn ctx_of(kind: &str) -> JobContext {
    JobContext {
        id: JobId::new(),
        kind: kind.into(),
        version: 1,
        payload: serde_json::json!({}),
        queue: "default".into(),
        attempt: 1,
        max_retries: 0,
        lease: 1,
    }
}

//! The `ObjectStore` and `UploadRepository` contracts.
//!
//! Longer than 450 lines: each MUST of the two ports is one test, over one
//! fixture; a contract split up is harder to hold against an adapter.

use crate::objects::ObjectClient;
use chrono::{DateTime, Utc};
use domain::{
    FirebaseUid, ProfileDefaults, ProfilePatch, Upload, UploadId, UploadPurpose, UploadStatus,
    UserId,
};
use ports::storage::{
    CompleteUploadError, Completion, CreateUploadError, ObjectStore, PostPolicy, UploadQuota,
    UploadRepository,
};
use ports::users::UserRepository;
use std::time::Duration;

fn policy(key: &str, max_bytes: u64) -> PostPolicy {
    PostPolicy {
        key: key.to_owned(),
        content_type: "image/png".into(),
        min_bytes: 1,
        max_bytes,
        expires_in: Duration::from_secs(300),
    }
}

/// A store and a client that talks to it, and a fresh key prefix (ending
/// in `/`) no other test uses.
#[expect(
    missing_debug_implementations,
    reason = "a test fixture of trait objects"
)]
pub struct StoreUnderTest {
    pub store: std::sync::Arc<dyn ObjectStore>,
    pub client: std::sync::Arc<dyn ObjectClient>,
    pub prefix: String,
    /// Whatever must live as long as the test (a server process, a schema).
    pub guard: Box<dyn std::any::Any + Send + Sync>,
}

pub async fn an_upload_within_the_policy_is_stored_and_read_back(t: StoreUnderTest) {
    let key = format!("{}avatar", t.prefix);
    let form = t.store.presign_post(&policy(&key, 1000)).unwrap();
    assert!(form.expires_at > Utc::now());
    assert_eq!(t.store.head(&key).await.unwrap(), None, "nothing yet");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(700).collect();
    let status = t.client.post_form(&form, bytes.clone()).await;
    assert!((200..300).contains(&status), "stored: {status}");
    let info = t
        .store
        .head(&key)
        .await
        .unwrap()
        .expect("the object is there");
    assert_eq!(info.size, 700);
    assert_eq!(info.content_type.as_deref(), Some("image/png"));
    let url = t.store.read_url(&key, Duration::from_secs(60)).unwrap();
    assert_eq!(t.client.get(&url).await, Some(bytes));
}

pub async fn the_store_refuses_what_the_policy_does_not_allow(t: StoreUnderTest) {
    let key = format!("{}avatar", t.prefix);
    let form = t.store.presign_post(&policy(&key, 100)).unwrap();
    let status = t.client.post_form(&form, vec![7; 101]).await;
    assert!((400..500).contains(&status), "oversize refused: {status}");
    assert_eq!(t.store.head(&key).await.unwrap(), None);

    let mut wrong_type = form.clone();
    wrong_type
        .fields
        .insert("Content-Type".into(), "text/html".into());
    let status = t.client.post_form(&wrong_type, vec![7; 10]).await;
    assert!((400..500).contains(&status), "wrong type refused: {status}");
    assert_eq!(t.store.head(&key).await.unwrap(), None);

    let mut other_key = form.clone();
    let elsewhere = format!("{}elsewhere", t.prefix);
    other_key.fields.insert("key".into(), elsewhere.clone());
    let status = t.client.post_form(&other_key, vec![7; 10]).await;
    assert!(
        (400..500).contains(&status),
        "another key refused: {status}"
    );
    assert_eq!(t.store.head(&elsewhere).await.unwrap(), None);

    let status = t.client.post_form(&form, vec![7; 100]).await;
    assert!(
        (200..300).contains(&status),
        "the form itself still works: {status}"
    );
}

pub async fn a_copy_is_what_the_source_held_when_copied(t: StoreUnderTest) {
    let (from, to) = (
        format!("{}incoming", t.prefix),
        format!("{}stored/a", t.prefix),
    );
    assert!(!t.store.copy(&from, &to).await.unwrap(), "nothing to copy");
    let form = t.store.presign_post(&policy(&from, 1000)).unwrap();
    assert!((200..300).contains(&t.client.post_form(&form, vec![1; 10]).await));
    assert!(t.store.copy(&from, &to).await.unwrap());
    // The same form posted again (it is still valid) changes the source
    // only.
    assert!((200..300).contains(&t.client.post_form(&form, vec![2; 20]).await));
    let info = t.store.head(&to).await.unwrap().expect("the copy");
    assert_eq!(
        (info.size, info.content_type.as_deref()),
        (10, Some("image/png"))
    );
    let url = t.store.read_url(&to, Duration::from_secs(60)).unwrap();
    assert_eq!(t.client.get(&url).await, Some(vec![1; 10]));
    assert_eq!(t.store.head(&from).await.unwrap().map(|i| i.size), Some(20));
}

pub async fn deleting_is_idempotent_and_a_prefix_takes_only_its_own(t: StoreUnderTest) {
    let mine = format!("{}u/a/", t.prefix);
    let theirs = format!("{}u/ab/", t.prefix);
    for key in [format!("{mine}1"), format!("{mine}2"), format!("{theirs}3")] {
        let form = t.store.presign_post(&policy(&key, 100)).unwrap();
        let status = t.client.post_form(&form, vec![1; 10]).await;
        assert!((200..300).contains(&status), "stored {key}: {status}");
    }
    assert_eq!(t.store.delete_prefix(&mine).await.unwrap(), 2);
    assert_eq!(t.store.delete_prefix(&mine).await.unwrap(), 0);
    assert_eq!(t.store.head(&format!("{mine}1")).await.unwrap(), None);
    assert!(t.store.head(&format!("{theirs}3")).await.unwrap().is_some());
    t.store.delete(&format!("{theirs}3")).await.unwrap();
    t.store.delete(&format!("{theirs}3")).await.unwrap();
    assert_eq!(t.store.head(&format!("{theirs}3")).await.unwrap(), None);
}

#[macro_export]
macro_rules! object_store_contract {
    ($make:expr) => {
        macro_rules! object_store_case {
            ($name:ident) => {
                #[tokio::test]
                async fn $name() {
                    let t = $make.await;
                    $crate::contract::storage::$name(t).await;
                }
            };
        }
        object_store_case!(an_upload_within_the_policy_is_stored_and_read_back);
        object_store_case!(the_store_refuses_what_the_policy_does_not_allow);
        object_store_case!(deleting_is_idempotent_and_a_prefix_takes_only_its_own);
        object_store_case!(a_copy_is_what_the_source_held_when_copied);
    };
}

/// Uploads and the users they belong to (uploads need a user row).
#[expect(
    missing_debug_implementations,
    reason = "a test fixture of trait objects"
)]
pub struct UploadsUnderTest {
    pub uploads: std::sync::Arc<dyn UploadRepository>,
    pub users: std::sync::Arc<dyn UserRepository>,
    /// Whatever must live as long as the test (a schema).
    pub guard: Box<dyn std::any::Any + Send + Sync>,
}

async fn user(t: &UploadsUnderTest, uid: &str) -> UserId {
    t.users
        .upsert_profile(
            &FirebaseUid::parse(uid).unwrap(),
            &ProfilePatch::default(),
            &ProfileDefaults::default(),
        )
        .await
        .unwrap()
        .user
        .id
}

fn upload(user: UserId, purpose: UploadPurpose, created_at: DateTime<Utc>) -> Upload {
    let id = UploadId::new();
    Upload {
        id,
        user_id: user,
        purpose,
        object_key: Upload::object_key_for(user, id),
        content_type: "image/png".into(),
        size: 10,
        status: UploadStatus::Pending,
        created_at,
        expires_at: created_at + chrono::Duration::minutes(15),
        completed_at: None,
        replaced_at: None,
    }
}

/// A quota that only bounds pending uploads.
fn pending(max_pending: u32) -> UploadQuota {
    UploadQuota {
        max_pending,
        max_files: 10_000,
        max_bytes: 1 << 40,
    }
}

fn roomy() -> UploadQuota {
    pending(10_000)
}

/// Completing `id` of `user` with `size` bytes at `at`, its object moved
/// to the key no form names.
fn completion(user: UserId, id: UploadId, size: u64, at: DateTime<Utc>) -> Completion {
    Completion {
        size,
        stored_key: Upload::stored_key_for(user, id),
        at,
    }
}

/// Timestamps as the store keeps them (Postgres: microseconds).
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap()
}

pub async fn completed_uploads_are_bounded_by_the_quota(t: UploadsUnderTest) {
    let (ada, bob) = (user(&t, "ada").await, user(&t, "bob").await);
    let now = micros(Utc::now());
    let quota = UploadQuota {
        max_pending: 10,
        max_files: 2,
        max_bytes: 100,
    };
    let sized = |u: UserId, size: u64| Upload {
        size,
        ..upload(u, UploadPurpose::Attachment, now)
    };
    // Completed uploads count; pending ones are checked as announced.
    let first = sized(ada, 40);
    t.uploads.create(&first, &quota).await.unwrap();
    let done_first = t
        .uploads
        .complete(ada, first.id, &completion(ada, first.id, 40, now), &quota)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        done_first.upload.object_key,
        Upload::stored_key_for(ada, first.id)
    );
    assert!(matches!(
        t.uploads.create(&sized(ada, 61), &quota).await,
        Err(CreateUploadError::QuotaExceeded { .. })
    ));
    // Announced small, stored big: refused at completion, nothing changed.
    let liar = sized(ada, 10);
    t.uploads.create(&liar, &quota).await.unwrap();
    assert!(matches!(
        t.uploads
            .complete(ada, liar.id, &completion(ada, liar.id, 90, now), &quota)
            .await,
        Err(CompleteUploadError::QuotaExceeded { .. })
    ));
    assert_eq!(
        t.uploads
            .find(ada, liar.id)
            .await
            .unwrap()
            .map(|u| u.status),
        Some(UploadStatus::Pending)
    );
    t.uploads
        .complete(ada, liar.id, &completion(ada, liar.id, 60, now), &quota)
        .await
        .unwrap()
        .unwrap();
    // Two files: no third, whatever its size.
    assert!(matches!(
        t.uploads.create(&sized(ada, 0), &quota).await,
        Err(CreateUploadError::QuotaExceeded { .. })
    ));
    // Another user's quota is their own.
    t.uploads.create(&sized(bob, 100), &quota).await.unwrap();
    // A new avatar takes the old one's place in the quota (from the
    // start: a user at their limit can still change it).
    let carl = user(&t, "carl").await;
    let one = UploadQuota {
        max_files: 1,
        ..quota
    };
    for n in 0..3 {
        let avatar = Upload {
            size: 50,
            ..upload(
                carl,
                UploadPurpose::Avatar,
                now + chrono::Duration::seconds(n),
            )
        };
        t.uploads.create(&avatar, &one).await.unwrap();
        t.uploads
            .complete(carl, avatar.id, &completion(carl, avatar.id, 50, now), &one)
            .await
            .unwrap()
            .unwrap();
    }
}

pub async fn pending_uploads_are_bounded_per_user(t: UploadsUnderTest) {
    let (ada, bob) = (user(&t, "ada").await, user(&t, "bob").await);
    let now = micros(Utc::now());
    for _ in 0..3 {
        t.uploads
            .create(&upload(ada, UploadPurpose::Attachment, now), &pending(3))
            .await
            .unwrap();
    }
    let fourth = upload(ada, UploadPurpose::Attachment, now);
    assert!(matches!(
        t.uploads.create(&fourth, &pending(3)).await,
        Err(CreateUploadError::TooManyPending { max: 3 })
    ));
    assert_eq!(t.uploads.find(ada, fourth.id).await.unwrap(), None);
    t.uploads
        .create(&upload(bob, UploadPurpose::Attachment, now), &pending(3))
        .await
        .unwrap();
    // Expired pending uploads no longer count.
    let old = micros(now - chrono::Duration::hours(1));
    let carl = user(&t, "carl").await;
    for _ in 0..3 {
        t.uploads
            .create(&upload(carl, UploadPurpose::Attachment, old), &pending(3))
            .await
            .unwrap();
    }
    t.uploads
        .create(&upload(carl, UploadPurpose::Attachment, now), &pending(3))
        .await
        .unwrap();
    let nobody = UserId::new();
    assert!(matches!(
        t.uploads
            .create(&upload(nobody, UploadPurpose::Avatar, now), &pending(3))
            .await,
        Err(CreateUploadError::NoUser)
    ));
}

pub async fn completing_an_avatar_replaces_the_previous_one(t: UploadsUnderTest) {
    let (ada, bob) = (user(&t, "ada").await, user(&t, "bob").await);
    let now = micros(Utc::now());
    let first = upload(ada, UploadPurpose::Avatar, now);
    let second = upload(
        ada,
        UploadPurpose::Avatar,
        now + chrono::Duration::seconds(1),
    );
    let file = upload(ada, UploadPurpose::Attachment, now);
    for u in [&first, &second, &file] {
        t.uploads.create(u, &pending(10)).await.unwrap();
    }
    assert_eq!(
        t.uploads.find(ada, first.id).await.unwrap().as_ref(),
        Some(&first)
    );
    assert_eq!(
        t.uploads.find(bob, first.id).await.unwrap(),
        None,
        "not bob's"
    );
    assert_eq!(
        t.uploads
            .complete(bob, first.id, &completion(bob, first.id, 5, now), &roomy())
            .await
            .unwrap(),
        None
    );

    let done = t
        .uploads
        .complete(ada, first.id, &completion(ada, first.id, 5, now), &roomy())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.upload.status, UploadStatus::Completed);
    assert_eq!((done.upload.size, done.upload.completed_at), (5, Some(now)));
    assert_eq!(done.replaced, None);
    let again = t
        .uploads
        .complete(ada, first.id, &completion(ada, first.id, 5, now), &roomy())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.upload, again.replaced), (done.upload.clone(), None));

    t.uploads
        .complete(ada, file.id, &completion(ada, file.id, 9, now), &roomy())
        .await
        .unwrap()
        .unwrap();
    let later = now + chrono::Duration::seconds(5);
    let next = t
        .uploads
        .complete(
            ada,
            second.id,
            &completion(ada, second.id, 6, later),
            &roomy(),
        )
        .await
        .unwrap()
        .unwrap();
    let replaced = next.replaced.expect("the first avatar was replaced");
    assert_eq!(replaced.id, first.id);
    assert_eq!(
        (replaced.status, replaced.replaced_at),
        (UploadStatus::Replaced, Some(later))
    );
    assert_eq!(
        t.uploads
            .complete(
                ada,
                first.id,
                &completion(ada, first.id, 5, later),
                &roomy()
            )
            .await
            .unwrap(),
        None,
        "a replaced avatar cannot come back"
    );
    let listed = t.uploads.list(ada, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|u| u.id).collect::<Vec<_>>()[0],
        second.id,
        "newest first"
    );
    assert_eq!(listed.len(), 3);
    assert_eq!(t.uploads.list(ada, 1).await.unwrap().len(), 1);
    assert_eq!(
        t.uploads.find_any(file.id).await.unwrap().map(|u| u.status),
        Some(UploadStatus::Completed)
    );
}

pub async fn stale_uploads_are_found_and_removed(t: UploadsUnderTest) {
    let ada = user(&t, "ada").await;
    let now = micros(Utc::now());
    let long_ago = micros(now - chrono::Duration::hours(2));
    let abandoned = upload(ada, UploadPurpose::Attachment, long_ago);
    let fresh = upload(ada, UploadPurpose::Attachment, now);
    let old_avatar = upload(ada, UploadPurpose::Avatar, long_ago);
    let new_avatar = upload(ada, UploadPurpose::Avatar, now);
    for u in [&abandoned, &fresh, &old_avatar, &new_avatar] {
        t.uploads.create(u, &pending(10)).await.unwrap();
    }
    t.uploads
        .complete(
            ada,
            old_avatar.id,
            &completion(ada, old_avatar.id, 1, long_ago),
            &roomy(),
        )
        .await
        .unwrap()
        .unwrap();
    t.uploads
        .complete(
            ada,
            new_avatar.id,
            &completion(ada, new_avatar.id, 1, now),
            &roomy(),
        )
        .await
        .unwrap()
        .unwrap();

    // Replaced just now: not yet past a grace period that started an hour ago.
    let hour_ago = now - chrono::Duration::hours(1);
    let stale = t.uploads.stale(hour_ago, hour_ago, 10).await.unwrap();
    assert_eq!(
        stale.iter().map(|u| u.id).collect::<Vec<_>>(),
        vec![abandoned.id]
    );
    let stale = t
        .uploads
        .stale(hour_ago, now + chrono::Duration::seconds(1), 10)
        .await
        .unwrap();
    let mut ids: Vec<_> = stale.iter().map(|u| u.id).collect();
    ids.sort();
    let mut want = vec![abandoned.id, old_avatar.id];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(
        t.uploads
            .stale(hour_ago, now + chrono::Duration::seconds(1), 1)
            .await
            .unwrap()
            .len(),
        1
    );

    t.uploads.remove(abandoned.id).await.unwrap();
    t.uploads.remove(abandoned.id).await.unwrap();
    assert_eq!(t.uploads.find(ada, abandoned.id).await.unwrap(), None);
}

pub async fn deleting_the_user_forgets_their_uploads(t: UploadsUnderTest) {
    let ada = user(&t, "ada").await;
    let u = upload(ada, UploadPurpose::Avatar, micros(Utc::now()));
    t.uploads.create(&u, &pending(10)).await.unwrap();
    t.users
        .delete_by_uid(&FirebaseUid::parse("ada").unwrap())
        .await
        .unwrap();
    assert_eq!(t.uploads.find_any(u.id).await.unwrap(), None);
}

#[macro_export]
macro_rules! upload_repository_contract {
    ($make:expr) => {
        macro_rules! upload_repository_case {
            ($name:ident) => {
                #[tokio::test]
                async fn $name() {
                    let t = $make.await;
                    $crate::contract::storage::$name(t).await;
                }
            };
        }
        upload_repository_case!(pending_uploads_are_bounded_per_user);
        upload_repository_case!(completed_uploads_are_bounded_by_the_quota);
        upload_repository_case!(completing_an_avatar_replaces_the_previous_one);
        upload_repository_case!(stale_uploads_are_found_and_removed);
        upload_repository_case!(deleting_the_user_forgets_their_uploads);
    };
}

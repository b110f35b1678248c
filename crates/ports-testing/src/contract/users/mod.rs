//! The contract of [`UserRepository`] and [`PushTokenRepository`], including
//! the events they append to the [`Outbox`].
//!
//! Longer than 450 lines: each MUST of the repository (and the events it
//! appends) is one test, over one fixture; the push tokens' part is in
//! `tokens.rs`.

mod tokens;
pub use tokens::*;

use domain::{
    DisplayName, DomainEvent, Email, FirebaseUid, PhotoUrl, Platform, ProfileDefaults,
    ProfilePatch, PushToken,
};
use ports::outbox::Outbox;
use ports::users::*;
use std::sync::Arc;
use std::time::Duration;

/// A user store under test: the three ports over one shared store.
pub trait UserStore: Send + Sync + 'static {
    fn users(&self) -> &dyn UserRepository;
    fn tokens(&self) -> &dyn PushTokenRepository;
    fn outbox(&self) -> &dyn Outbox;
}

impl UserStore for crate::InMemoryStore {
    fn users(&self) -> &dyn UserRepository {
        self
    }
    fn tokens(&self) -> &dyn PushTokenRepository {
        self
    }
    fn outbox(&self) -> &dyn Outbox {
        self
    }
}

fn uid(s: &str) -> FirebaseUid {
    FirebaseUid::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn token(s: &str) -> PushToken {
    PushToken::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn name(s: &str) -> DisplayName {
    DisplayName::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn email(s: &str) -> Email {
    Email::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

/// Every event in the outbox, published or not, in order (claims them all
/// with a long lease, so call it once per test, at the end).
async fn drain_events(store: &dyn UserStore) -> Vec<DomainEvent> {
    let rows = store
        .outbox()
        .claim(10_000, Duration::from_secs(600))
        .await
        .unwrap_or_else(|e| panic!("claim failed: {e:#}"));
    let mut seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    let sorted = {
        let mut s = seqs.clone();
        s.sort_unstable();
        s
    };
    assert_eq!(seqs, sorted, "claim must return rows oldest first");
    seqs.dedup();
    assert_eq!(seqs.len(), rows.len(), "claim returned a row twice");
    rows.into_iter()
        .map(|r| {
            r.event
                .decode()
                .expect("repositories write events this version knows")
                .event
        })
        .collect()
}

pub async fn unknown_uid_has_no_user(store: &dyn UserStore) {
    let found = store.users().find_by_uid(&uid("nobody")).await.unwrap();
    assert!(found.is_none());
}

pub async fn first_upsert_creates_the_user_with_defaults_and_one_event(store: &dyn UserStore) {
    let patch = ProfilePatch {
        display_name: Some(name("Ada")),
        ..ProfilePatch::default()
    };
    let defaults = ProfileDefaults {
        email: Some(email("ada@example.com")),
        display_name: Some(name("From Token")),
        photo_url: None,
        verified_email: Some(email("ada@example.com")),
        issued_at: None,
    };
    let up = store
        .users()
        .upsert_profile(&uid("u-create"), &patch, &defaults)
        .await
        .unwrap();
    assert_eq!(up.outcome, UpsertOutcome::Created);
    assert_eq!(up.user.display_name, Some(name("Ada")));
    assert_eq!(up.user.email, Some(email("ada@example.com")));
    let found = store
        .users()
        .find_by_uid(&uid("u-create"))
        .await
        .unwrap()
        .expect("user exists after create");
    assert_eq!(found.id, up.user.id);
    assert_eq!(found.display_name, up.user.display_name);
    let events = drain_events(store).await;
    assert_eq!(events.len(), 1, "{events:?}");
    match &events[0] {
        DomainEvent::UserCreated(e) => {
            assert_eq!(e.user_id, up.user.id);
            assert_eq!(e.uid, uid("u-create"));
            assert!(e.email_verified);
            // Identifiers only: the address and the name stay in the table.
            assert_eq!(
                (&e.email, &e.display_name, &e.verified_email),
                (&None, &None, &None)
            );
        }
        other => panic!("expected UserCreated, got {other:?}"),
    }
}

pub async fn an_address_the_provider_verifies_later_is_announced_once(store: &dyn UserStore) {
    let u = uid("u-verify");
    let typed = ProfilePatch {
        email: Some(email("typed@example.com")),
        ..ProfilePatch::default()
    };
    let unverified = ProfileDefaults {
        email: Some(email("token@example.com")),
        ..ProfileDefaults::default()
    };
    store
        .users()
        .upsert_profile(&u, &typed, &unverified)
        .await
        .unwrap();
    let verified = ProfileDefaults {
        verified_email: Some(email("token@example.com")),
        ..unverified.clone()
    };
    // Nothing to change in the profile, but the token now vouches for an
    // address: that is news, announced once, through either way in.
    let up = store
        .users()
        .upsert_profile(&u, &ProfilePatch::default(), &verified)
        .await
        .unwrap();
    assert_eq!(up.outcome, UpsertOutcome::Unchanged);
    assert_eq!(
        up.user.email,
        Some(email("typed@example.com")),
        "the profile keeps the address it was given"
    );
    store
        .users()
        .upsert_profile(&u, &ProfilePatch::default(), &verified)
        .await
        .unwrap();
    let token = PushToken::parse("verify-device").unwrap();
    store
        .tokens()
        .register(&u, &token, Platform::Ios, &verified)
        .await
        .unwrap();
    let other = ProfileDefaults {
        verified_email: Some(email("new@example.com")),
        ..ProfileDefaults::default()
    };
    store
        .tokens()
        .register(&u, &token, Platform::Ios, &other)
        .await
        .unwrap();
    let events = drain_events(store).await;
    let types: Vec<&str> = events.iter().map(DomainEvent::event_type).collect();
    assert_eq!(
        types,
        ["user.created", "user.email_verified", "user.email_verified"]
    );
    match (&events[0], &events[1], &events[2]) {
        (
            DomainEvent::UserCreated(created),
            DomainEvent::EmailVerified(first),
            DomainEvent::EmailVerified(second),
        ) => {
            assert!(!created.email_verified, "typed, not verified");
            assert_eq!(
                store.users().verified_email(&u).await.unwrap(),
                Some(email("new@example.com")),
                "the last address vouched for, in the table"
            );
            assert_eq!(first.uid, u);
            assert_eq!(first.user_id, up.user.id);
            assert_eq!((&first.email, &second.email), (&None, &None));
        }
        other => panic!("unexpected events: {other:?}"),
    }
}

pub async fn upsert_updates_changes_and_ignores_no_ops(store: &dyn UserStore) {
    let u = uid("u-update");
    let created = store
        .users()
        .upsert_profile(&u, &ProfilePatch::default(), &ProfileDefaults::default())
        .await
        .unwrap();
    assert_eq!(created.outcome, UpsertOutcome::Created);

    let same = store
        .users()
        .upsert_profile(&u, &ProfilePatch::default(), &ProfileDefaults::default())
        .await
        .unwrap();
    assert_eq!(same.outcome, UpsertOutcome::Unchanged);
    assert_eq!(same.user.updated_at, created.user.updated_at);

    let photo = PhotoUrl::parse("https://example.com/p.png").unwrap();
    let patch = ProfilePatch {
        photo_url: Some(photo.clone()),
        ..ProfilePatch::default()
    };
    // Defaults are for creation only: they must not overwrite anything now.
    let defaults = ProfileDefaults {
        display_name: Some(name("Token Name")),
        ..ProfileDefaults::default()
    };
    // Timestamps must move: make sure the clock has.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let updated = store
        .users()
        .upsert_profile(&u, &patch, &defaults)
        .await
        .unwrap();
    assert_eq!(updated.outcome, UpsertOutcome::Updated);
    assert_eq!(updated.user.photo_url, Some(photo.clone()));
    assert_eq!(updated.user.display_name, None);
    assert_eq!(updated.user.id, created.user.id);
    assert!(
        updated.user.updated_at > created.user.updated_at,
        "a change moves updated_at"
    );
    assert_eq!(updated.user.created_at, created.user.created_at);

    let again = store
        .users()
        .upsert_profile(&u, &patch, &defaults)
        .await
        .unwrap();
    assert_eq!(again.outcome, UpsertOutcome::Unchanged);

    let events = drain_events(store).await;
    let types: Vec<&str> = events.iter().map(DomainEvent::event_type).collect();
    assert_eq!(types, ["user.created", "user.profile_updated"]);
    match &events[1] {
        // Identifiers only: the new photo is read from the table.
        DomainEvent::ProfileUpdated(e) => {
            assert_eq!((e.user_id, &e.photo_url), (updated.user.id, &None));
            assert_eq!(
                store
                    .users()
                    .find_by_uid(&u)
                    .await
                    .unwrap()
                    .unwrap()
                    .photo_url,
                Some(photo)
            );
        }
        other => panic!("expected ProfileUpdated, got {other:?}"),
    }
}

pub async fn concurrent_first_upserts_create_exactly_once(store: Arc<dyn UserStore>) {
    let u = uid("u-race");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        let u = u.clone();
        tasks.push(tokio::spawn(async move {
            let patch = ProfilePatch {
                display_name: Some(name(&format!("Racer {i}"))),
                ..ProfilePatch::default()
            };
            store
                .users()
                .upsert_profile(&u, &patch, &ProfileDefaults::default())
                .await
                .unwrap()
        }));
    }
    let mut created = 0;
    let mut ids = Vec::new();
    for t in tasks {
        let up = t.await.unwrap();
        if up.outcome == UpsertOutcome::Created {
            created += 1;
        }
        ids.push(up.user.id);
    }
    assert_eq!(created, 1, "exactly one upsert creates the user");
    ids.dedup();
    assert_eq!(ids.len(), 1, "all upserts saw the same user");
    let events = drain_events(store.as_ref()).await;
    let creations = events
        .iter()
        .filter(|e| matches!(e, DomainEvent::UserCreated(_)))
        .count();
    assert_eq!(creations, 1);
}

/// Both endpoints race for a new uid: one user, one `UserCreated`.
pub async fn concurrent_first_registrations_and_upserts_create_exactly_once(
    store: Arc<dyn UserStore>,
) {
    let u = uid("u-mixed-race");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (store, u) = (store.clone(), u.clone());
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                store
                    .tokens()
                    .register(
                        &u,
                        &token(&format!("race-{i}")),
                        Platform::Android,
                        &ProfileDefaults::default(),
                    )
                    .await
                    .unwrap()
                    .user_created
            } else {
                store
                    .users()
                    .upsert_profile(&u, &ProfilePatch::default(), &ProfileDefaults::default())
                    .await
                    .unwrap()
                    .outcome
                    == UpsertOutcome::Created
            }
        }));
    }
    let mut created = 0;
    for t in tasks {
        if t.await.unwrap() {
            created += 1;
        }
    }
    assert_eq!(created, 1, "exactly one call creates the user");
    let page = store.tokens().list_for_user(&u, None, 100).await.unwrap();
    assert_eq!(page.items.len(), 10, "every token registered");
    let events = drain_events(store.as_ref()).await;
    let creations = events
        .iter()
        .filter(|e| matches!(e, DomainEvent::UserCreated(_)))
        .count();
    assert_eq!(creations, 1);
}

pub async fn delete_removes_the_user_and_its_tokens_once(store: &dyn UserStore) {
    let u = uid("u-delete");
    store
        .tokens()
        .register(
            &u,
            &token("tok-del-1"),
            Platform::Ios,
            &ProfileDefaults::default(),
        )
        .await
        .unwrap();
    let deleted = store.users().delete_by_uid(&u).await.unwrap();
    assert_eq!(deleted.uid, u);
    assert!(store.users().find_by_uid(&u).await.unwrap().is_none());
    assert!(matches!(
        store.users().delete_by_uid(&u).await,
        Err(DeleteUserError::NotFound)
    ));
    // The token went with the user: registering it elsewhere is a fresh row.
    assert!(
        !store
            .tokens()
            .delete_token(&token("tok-del-1"))
            .await
            .unwrap()
    );
    let events = drain_events(store).await;
    let types: Vec<&str> = events.iter().map(DomainEvent::event_type).collect();
    assert_eq!(types, ["user.created", "user.deleted"]);
}

pub async fn the_events_about_a_user_are_listed_oldest_first(store: &dyn UserStore) {
    let (u, other) = (uid("u-events"), uid("u-events-other"));
    for (who, name_) in [(&u, "One"), (&other, "Else"), (&u, "Two")] {
        store
            .users()
            .upsert_profile(
                who,
                &ProfilePatch {
                    display_name: Some(name(name_)),
                    ..ProfilePatch::default()
                },
                &ProfileDefaults::default(),
            )
            .await
            .unwrap();
    }
    let events = store.users().events_about(&u, 100).await.unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event.event_type.as_str()).collect();
    assert_eq!(types, ["user.created", "user.profile_updated"]);
    assert!(events.iter().all(|e| e.event.payload["uid"] == "u-events"));
    assert!(
        events.iter().all(|e| e.published_at.is_none()),
        "not relayed yet"
    );
    assert_eq!(store.users().events_about(&u, 1).await.unwrap().len(), 1);
    assert!(
        store
            .users()
            .events_about(&uid("nobody"), 100)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Defaults from a token issued at `at`.
fn issued(at: chrono::DateTime<chrono::Utc>) -> ProfileDefaults {
    ProfileDefaults {
        issued_at: Some(at),
        ..ProfileDefaults::default()
    }
}

pub async fn a_deletion_revokes_the_tokens_issued_before_it(store: &dyn UserStore) {
    let u = uid("u-tombstone");
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    assert_eq!(store.users().deleted_at(&u).await.unwrap(), None);
    store
        .users()
        .upsert_profile(&u, &ProfilePatch::default(), &issued(before))
        .await
        .unwrap();
    store.users().delete_by_uid(&u).await.unwrap();
    let deleted = store
        .users()
        .deleted_at(&u)
        .await
        .unwrap()
        .expect("a tombstone");
    assert!(deleted >= before, "{deleted} < {before}");
    // A token from before the deletion creates nothing, either way in;
    // one without a known issue time is taken as older.
    for defaults in [issued(before), issued(deleted), ProfileDefaults::default()] {
        assert!(matches!(
            store
                .users()
                .upsert_profile(&u, &ProfilePatch::default(), &defaults)
                .await,
            Err(UpsertProfileError::AccountDeleted)
        ));
        assert!(matches!(
            store
                .tokens()
                .register(&u, &token("tok-revoked"), Platform::Ios, &defaults)
                .await,
            Err(RegisterPushTokenError::AccountDeleted)
        ));
    }
    assert!(store.users().find_by_uid(&u).await.unwrap().is_none());
    // A token issued after it signs up anew.
    let after = deleted + chrono::Duration::seconds(1);
    let again = store
        .users()
        .upsert_profile(&u, &ProfilePatch::default(), &issued(after))
        .await
        .unwrap();
    assert_eq!(again.outcome, UpsertOutcome::Created);
    // Other uids are not touched, and old tombstones can be forgotten.
    assert_eq!(
        store.users().deleted_at(&uid("u-other")).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .users()
            .forget_deletions(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert!(
        store
            .users()
            .forget_deletions(Duration::ZERO)
            .await
            .unwrap()
            >= 1
    );
    assert_eq!(store.users().deleted_at(&u).await.unwrap(), None);
    let events = drain_events(store).await;
    let types: Vec<&str> = events.iter().map(DomainEvent::event_type).collect();
    assert_eq!(types, ["user.created", "user.deleted", "user.created"]);
}

/// Expands to one `#[tokio::test]` per case of the user store contract, in
/// the scope where it is invoked (give it a module of its own). `$make` is an
/// expression evaluating to a future of an `Arc<S>` where `S: UserStore`; it
/// runs once per test, so each test gets a fresh store.
#[macro_export]
macro_rules! user_store_contract {
    ($make:expr) => {
        macro_rules! user_store_case {
            ($name:ident) => {
                #[tokio::test]
                async fn $name() {
                    let store = $make.await;
                    $crate::contract::users::$name(store.as_ref()).await;
                }
            };
        }

        user_store_case!(unknown_uid_has_no_user);
        user_store_case!(first_upsert_creates_the_user_with_defaults_and_one_event);
        user_store_case!(upsert_updates_changes_and_ignores_no_ops);
        user_store_case!(an_address_the_provider_verifies_later_is_announced_once);
        user_store_case!(delete_removes_the_user_and_its_tokens_once);
        user_store_case!(a_deletion_revokes_the_tokens_issued_before_it);
        user_store_case!(the_events_about_a_user_are_listed_oldest_first);
        user_store_case!(registering_a_token_creates_the_user_once);
        user_store_case!(registering_the_same_token_again_only_bumps_last_seen);
        user_store_case!(a_token_moves_to_the_user_who_registers_it);
        user_store_case!(unregister_removes_only_the_callers_token);
        user_store_case!(listing_tokens_pages_through_all_of_them_in_order);

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_first_upserts_create_exactly_once() {
            let store = $make.await;
            $crate::contract::users::concurrent_first_upserts_create_exactly_once(store)
                .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_first_registrations_and_upserts_create_exactly_once() {
            let store = $make.await;
            $crate::contract::users::concurrent_first_registrations_and_upserts_create_exactly_once(store)
                .await;
        }
    };
}

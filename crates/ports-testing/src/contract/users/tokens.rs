//! The push-token half of the user store contract: registering, moving,
//! unregistering and listing device tokens.

use super::{UserStore, drain_events, email, token, uid};
use domain::{DomainEvent, FirebaseUid, Platform, ProfileDefaults, ProfilePatch};
use ports::users::*;
use std::time::Duration;

/// How many tokens `uid` has (at most one page of 10).
async fn token_count(store: &dyn UserStore, uid: &FirebaseUid) -> usize {
    store
        .tokens()
        .list_for_user(uid, None, 10)
        .await
        .unwrap()
        .items
        .len()
}

pub async fn registering_a_token_creates_the_user_once(store: &dyn UserStore) {
    let u = uid("u-token-first");
    let defaults = ProfileDefaults {
        email: Some(email("t@example.com")),
        ..ProfileDefaults::default()
    };
    let first = store
        .tokens()
        .register(&u, &token("tok-a"), Platform::Android, &defaults)
        .await
        .unwrap();
    assert!(first.user_created);
    let second = store
        .tokens()
        .register(&u, &token("tok-b"), Platform::Ios, &defaults)
        .await
        .unwrap();
    assert!(!second.user_created);
    let user = store.users().find_by_uid(&u).await.unwrap().unwrap();
    assert_eq!(user.email, Some(email("t@example.com")));
    assert_eq!(first.record.user_id, user.id);
    // A profile upsert after the token does not create again.
    let up = store
        .users()
        .upsert_profile(&u, &ProfilePatch::default(), &defaults)
        .await
        .unwrap();
    assert_ne!(up.outcome, UpsertOutcome::Created);
    let events = drain_events(store).await;
    let types: Vec<&str> = events.iter().map(DomainEvent::event_type).collect();
    assert_eq!(types, ["user.created"]);
}

pub async fn registering_the_same_token_again_only_bumps_last_seen(store: &dyn UserStore) {
    let u = uid("u-idem");
    let t = token("tok-idem");
    let first = store
        .tokens()
        .register(&u, &t, Platform::Android, &ProfileDefaults::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    let second = store
        .tokens()
        .register(&u, &t, Platform::Android, &ProfileDefaults::default())
        .await
        .unwrap();
    assert_eq!(second.record.created_at, first.record.created_at);
    assert!(
        second.record.last_seen_at > first.record.last_seen_at,
        "registering again bumps last_seen_at"
    );
    let page = store.tokens().list_for_user(&u, None, 10).await.unwrap();
    assert_eq!(page.items.len(), 1);
}

pub async fn a_token_moves_to_the_user_who_registers_it(store: &dyn UserStore) {
    let (alice, bob) = (uid("u-alice"), uid("u-bob"));
    let t = token("tok-shared-device");
    let d = ProfileDefaults::default();
    store
        .tokens()
        .register(&alice, &t, Platform::Ios, &d)
        .await
        .unwrap();
    let moved = store
        .tokens()
        .register(&bob, &t, Platform::Ios, &d)
        .await
        .unwrap();
    let bob_user = store.users().find_by_uid(&bob).await.unwrap().unwrap();
    assert_eq!(moved.record.user_id, bob_user.id);
    assert_eq!(token_count(store, &alice).await, 0);
    assert_eq!(token_count(store, &bob).await, 1);
}

pub async fn unregister_removes_only_the_callers_token(store: &dyn UserStore) {
    let (alice, bob) = (uid("u-un-alice"), uid("u-un-bob"));
    let d = ProfileDefaults::default();
    store
        .tokens()
        .register(&alice, &token("tok-alice"), Platform::Web, &d)
        .await
        .unwrap();
    store
        .tokens()
        .register(&bob, &token("tok-bob"), Platform::Web, &d)
        .await
        .unwrap();
    assert!(matches!(
        store.tokens().unregister(&alice, &token("tok-bob")).await,
        Err(UnregisterPushTokenError::NotFound)
    ));
    assert!(matches!(
        store
            .tokens()
            .unregister(&alice, &token("tok-unknown"))
            .await,
        Err(UnregisterPushTokenError::NotFound)
    ));
    assert!(matches!(
        store
            .tokens()
            .unregister(&uid("u-un-nobody"), &token("tok-bob"))
            .await,
        Err(UnregisterPushTokenError::NotFound)
    ));
    store
        .tokens()
        .unregister(&alice, &token("tok-alice"))
        .await
        .unwrap();
    assert_eq!(token_count(store, &alice).await, 0);
    assert_eq!(token_count(store, &bob).await, 1);
}

pub async fn listing_tokens_pages_through_all_of_them_in_order(store: &dyn UserStore) {
    let u = uid("u-list");
    let d = ProfileDefaults::default();
    for i in 0..7 {
        store
            .tokens()
            .register(&u, &token(&format!("tok-list-{i}")), Platform::Android, &d)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    for _ in 0..10 {
        let page = store.tokens().list_for_user(&u, after, 3).await.unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|r| r.token.as_str().to_owned()));
        match page.next {
            Some(k) => after = Some(k),
            None => break,
        }
    }
    let expected: Vec<String> = (0..7).map(|i| format!("tok-list-{i}")).collect();
    assert_eq!(seen, expected);
    let empty = store
        .tokens()
        .list_for_user(&uid("u-list-nobody"), None, 3)
        .await
        .unwrap();
    assert!(empty.items.is_empty() && empty.next.is_none());
    let exact = store.tokens().list_for_user(&u, None, 7).await.unwrap();
    assert_eq!(exact.items.len(), 7);
    assert!(
        exact.next.is_none(),
        "no next cursor when the page ends the list"
    );
}

//! The contract of [`Outbox`]: claims, leases, publishing and pruning.

use super::eventually;
use super::users::UserStore;
use chrono::Utc;
use domain::{FirebaseUid, ProfileDefaults, ProfilePatch};
use std::time::Duration;

async fn create_users(store: &dyn UserStore, n: usize, prefix: &str) {
    for i in 0..n {
        let uid = FirebaseUid::parse(&format!("{prefix}-{i}")).unwrap_or_else(|e| panic!("{e}"));
        store
            .users()
            .upsert_profile(&uid, &ProfilePatch::default(), &ProfileDefaults::default())
            .await
            .unwrap_or_else(|e| panic!("upsert failed: {e:#}"));
    }
}

pub async fn claims_are_exclusive_until_released(store: &dyn UserStore) {
    create_users(store, 5, "ob-claim").await;
    let ob = store.outbox();
    assert_eq!(ob.backlog().await.unwrap(), 5);
    let first = ob.claim(3, Duration::from_secs(60)).await.unwrap();
    assert_eq!(first.len(), 3);
    let second = ob.claim(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        second.len(),
        2,
        "a second claim gets only the unclaimed rows"
    );
    assert!(first.iter().all(|a| second.iter().all(|b| a.seq != b.seq)));
    assert!(first.iter().all(|r| r.event.topic == "users"));
    assert!(
        ob.claim(10, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );

    let first_seqs: Vec<i64> = first.iter().map(|r| r.seq).collect();
    ob.release(&first_seqs).await.unwrap();
    let again = ob.claim(10, Duration::from_secs(60)).await.unwrap();
    let again_seqs: Vec<i64> = again.iter().map(|r| r.seq).collect();
    assert_eq!(again_seqs, first_seqs, "released rows come back, in order");
    assert_eq!(again[0].event, first[0].event);
}

pub async fn published_rows_leave_the_backlog_and_can_be_pruned(store: &dyn UserStore) {
    create_users(store, 4, "ob-pub").await;
    let ob = store.outbox();
    let rows = ob.claim(10, Duration::from_secs(60)).await.unwrap();
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    ob.mark_published(&seqs[..3]).await.unwrap();
    ob.mark_published(&seqs[..3]).await.unwrap();
    assert_eq!(ob.backlog().await.unwrap(), 1);
    ob.release(&seqs).await.unwrap();
    let rest = ob.claim(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(rest.iter().map(|r| r.seq).collect::<Vec<_>>(), [seqs[3]]);

    assert_eq!(
        ob.prune_published(Utc::now() - chrono::Duration::hours(1))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        ob.prune_published(Utc::now() + chrono::Duration::seconds(1))
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        ob.backlog().await.unwrap(),
        1,
        "pruning never touches unpublished rows"
    );
}

pub async fn an_expired_lease_makes_rows_claimable_again(store: &dyn UserStore) {
    create_users(store, 2, "ob-lease").await;
    let ob = store.outbox();
    let held = ob.claim(10, Duration::from_millis(300)).await.unwrap();
    assert_eq!(held.len(), 2);
    let back = eventually("the lease to expire", Duration::from_secs(10), || async {
        let rows = ob.claim(10, Duration::from_secs(60)).await.unwrap();
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(
        back.iter().map(|r| r.seq).collect::<Vec<_>>(),
        held.iter().map(|r| r.seq).collect::<Vec<_>>()
    );
}

/// Two handles on one outbox (two relay processes): only one leads; when
/// it dies (its handle is dropped) the other takes over at once, and the
/// rows the dead leader had claimed are published first.
pub async fn one_relay_leads_and_a_dead_leaders_rows_come_first(
    store: &dyn UserStore,
    first: Box<dyn ports::Outbox>,
    second: Box<dyn ports::Outbox>,
) {
    create_users(store, 3, "ob-lead").await;
    let term = first.lead().await.unwrap().expect("the first to ask leads");
    assert_eq!(
        first.lead().await.unwrap(),
        Some(term),
        "and keeps leading, in the same term"
    );
    assert_eq!(second.lead().await.unwrap(), None, "one leader at a time");
    let held = first.claim(2, Duration::from_secs(600)).await.unwrap();
    assert_eq!(held.len(), 2);
    drop(first);
    let took_over = std::time::Instant::now();
    let second_term = eventually("the standby to lead", Duration::from_secs(5), || async {
        second.lead().await.unwrap()
    })
    .await;
    assert!(second_term > term, "a later leadership, a later term");
    assert!(
        took_over.elapsed() < Duration::from_secs(2),
        "taken over in {:?}, not after a lease",
        took_over.elapsed()
    );
    let rows = second.claim(10, Duration::from_secs(60)).await.unwrap();
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(seqs.len(), 3, "the dead leader's leases are void");
    assert_eq!(
        &seqs[..2],
        &held.iter().map(|r| r.seq).collect::<Vec<_>>()[..]
    );
    second.resign().await;
    let third_term = second
        .lead()
        .await
        .unwrap()
        .expect("resigned, then led again");
    assert!(third_term > second_term, "each leadership a later term");
}

/// Expands to one `#[tokio::test]` per case of the outbox contract; see
/// [`user_store_contract!`](ports::user_store_contract).
#[macro_export]
macro_rules! outbox_contract {
    ($make:expr) => {
        macro_rules! outbox_case {
            ($name:ident) => {
                #[tokio::test]
                async fn $name() {
                    let store = $make.await;
                    $crate::contract::outbox::$name(store.as_ref()).await;
                }
            };
        }

        outbox_case!(claims_are_exclusive_until_released);
        outbox_case!(published_rows_leave_the_backlog_and_can_be_pruned);
        outbox_case!(an_expired_lease_makes_rows_claimable_again);
    };
}

/// The leadership case of the outbox contract. `$make` is an async
/// expression giving `(store, first_handle, second_handle)`: a
/// [`UserStore`] and two more outbox handles on its data, as boxes.
#[macro_export]
macro_rules! outbox_leadership_contract {
    ($make:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn one_relay_leads_and_a_dead_leaders_rows_come_first() {
            let (store, first, second) = $make.await;
            $crate::contract::outbox::one_relay_leads_and_a_dead_leaders_rows_come_first(
                store.as_ref(),
                first,
                second,
            )
            .await;
        }
    };
}

//! The `WelcomeLedger` contract.

use domain::{Email, FirebaseUid};
use ports::JobId;
use ports::mail::{ClaimWelcomeOutcome, SendHolder, WelcomeLedger};
use std::sync::Arc;
use std::time::Duration;

const MONTH: Duration = Duration::from_secs(30 * 24 * 3600);
const LONG: Duration = Duration::from_secs(600);

fn uid(s: &str) -> FirebaseUid {
    FirebaseUid::parse(s).unwrap()
}

fn email(s: &str) -> Email {
    Email::parse(s).unwrap()
}

fn holder(lease: u64) -> SendHolder {
    SendHolder {
        job: JobId::new(),
        lease,
    }
}

pub async fn a_uid_is_welcomed_once_ever_whatever_the_address(ledger: &dyn WelcomeLedger) {
    let (ada, first) = (uid("ada"), holder(1));
    let claim = |to: &'static str, h: SendHolder| {
        let ada = ada.clone();
        async move {
            ledger
                .claim(&ada, &email(to), h, MONTH, LONG)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        claim("ada@example.com", first).await,
        ClaimWelcomeOutcome::Claimed
    );
    ledger.mark_sent(&ada, first).await.unwrap();
    ledger.mark_sent(&ada, first).await.unwrap();
    assert_eq!(
        claim("ada@example.com", holder(1)).await,
        ClaimWelcomeOutcome::AlreadySent
    );
    assert_eq!(
        claim("other@example.com", holder(7)).await,
        ClaimWelcomeOutcome::AlreadySent,
        "a new address does not buy a second welcome"
    );
    assert_eq!(
        claim("ada@example.com", SendHolder { lease: 2, ..first }).await,
        ClaimWelcomeOutcome::AlreadySent
    );
}

pub async fn an_address_gets_one_welcome_per_window_whatever_the_uid(ledger: &dyn WelcomeLedger) {
    let shared = email("Shared@Example.com");
    let a = holder(1);
    assert_eq!(
        ledger
            .claim(&uid("one"), &shared, a, MONTH, LONG)
            .await
            .unwrap(),
        ClaimWelcomeOutcome::Claimed
    );
    assert_eq!(
        ledger
            .claim(
                &uid("two"),
                &email("shared@example.com"),
                holder(1),
                MONTH,
                LONG
            )
            .await
            .unwrap(),
        ClaimWelcomeOutcome::RecipientMailedRecently,
        "while the first is being sent, and whatever the case"
    );
    ledger.mark_sent(&uid("one"), a).await.unwrap();
    assert_eq!(
        ledger
            .claim(&uid("three"), &shared, holder(1), MONTH, LONG)
            .await
            .unwrap(),
        ClaimWelcomeOutcome::RecipientMailedRecently
    );
    assert_eq!(
        ledger
            .claim(&uid("three"), &shared, holder(1), Duration::ZERO, LONG)
            .await
            .unwrap(),
        ClaimWelcomeOutcome::Claimed,
        "outside the window the address is free again"
    );
}

pub async fn another_attempt_is_busy_until_the_claim_is_released_or_stale(
    ledger: &dyn WelcomeLedger,
) {
    let (u, to) = (uid("busy"), email("busy@example.com"));
    let a = holder(1);
    assert_eq!(
        ledger.claim(&u, &to, a, MONTH, LONG).await.unwrap(),
        ClaimWelcomeOutcome::Claimed
    );
    assert_eq!(
        ledger.claim(&u, &to, a, MONTH, LONG).await.unwrap(),
        ClaimWelcomeOutcome::Claimed,
        "the holder may claim again"
    );
    let b = holder(1);
    match ledger.claim(&u, &to, b, MONTH, LONG).await.unwrap() {
        ClaimWelcomeOutcome::Busy { retry_after } => {
            assert!(
                retry_after > Duration::ZERO && retry_after <= LONG,
                "{retry_after:?}"
            );
        }
        other => panic!("another job's live claim: {other:?}"),
    }
    ledger.release(&u, b).await.unwrap();
    assert!(
        matches!(
            ledger.claim(&u, &to, b, MONTH, LONG).await.unwrap(),
            ClaimWelcomeOutcome::Busy { .. }
        ),
        "a release by someone else does nothing"
    );
    ledger.release(&u, a).await.unwrap();
    assert_eq!(
        ledger.claim(&u, &to, b, MONTH, LONG).await.unwrap(),
        ClaimWelcomeOutcome::Claimed,
        "released: free for the next attempt"
    );
    let c = holder(1);
    assert_eq!(
        ledger
            .claim(&u, &to, c, MONTH, Duration::ZERO)
            .await
            .unwrap(),
        ClaimWelcomeOutcome::Claimed,
        "a claim older than stale_after is taken over"
    );
    ledger.mark_sent(&u, b).await.unwrap();
    assert!(
        matches!(
            ledger.claim(&u, &to, holder(1), MONTH, LONG).await.unwrap(),
            ClaimWelcomeOutcome::Busy { .. }
        ),
        "the holder it was taken from cannot mark it sent"
    );
}

pub async fn a_later_lease_of_the_same_job_takes_the_claim_over_at_once(
    ledger: &dyn WelcomeLedger,
) {
    let (u, to) = (uid("lease"), email("lease@example.com"));
    let first = holder(3);
    let recovered = SendHolder { lease: 4, ..first };
    assert_eq!(
        ledger.claim(&u, &to, first, MONTH, LONG).await.unwrap(),
        ClaimWelcomeOutcome::Claimed
    );
    assert_eq!(
        ledger.claim(&u, &to, recovered, MONTH, LONG).await.unwrap(),
        ClaimWelcomeOutcome::Claimed,
        "the earlier lease was recovered: its claim is void"
    );
    assert!(
        matches!(
            ledger.claim(&u, &to, first, MONTH, LONG).await.unwrap(),
            ClaimWelcomeOutcome::Busy { .. }
        ),
        "and the void lease cannot take it back"
    );
    ledger.mark_sent(&u, first).await.unwrap();
    ledger.release(&u, first).await.unwrap();
    ledger.mark_sent(&u, recovered).await.unwrap();
    assert_eq!(
        ledger.claim(&u, &to, holder(9), MONTH, LONG).await.unwrap(),
        ClaimWelcomeOutcome::AlreadySent
    );
}

pub async fn concurrent_claims_give_one_claim(ledger: Arc<dyn WelcomeLedger>) {
    let same_uid = (0..16).map(|_| {
        let ledger = ledger.clone();
        tokio::spawn(async move {
            ledger
                .claim(
                    &uid("race"),
                    &email("race@example.com"),
                    holder(1),
                    MONTH,
                    LONG,
                )
                .await
                .unwrap()
        })
    });
    let same_address = (0..16).map(|i| {
        let ledger = ledger.clone();
        tokio::spawn(async move {
            ledger
                .claim(
                    &uid(&format!("racer-{i}")),
                    &email("racers@example.com"),
                    holder(1),
                    MONTH,
                    LONG,
                )
                .await
                .unwrap()
        })
    });
    for (what, tasks) in [
        ("one uid", same_uid.collect::<Vec<_>>()),
        ("one address", same_address.collect::<Vec<_>>()),
    ] {
        let mut claimed = 0;
        for t in tasks {
            if t.await.unwrap() == ClaimWelcomeOutcome::Claimed {
                claimed += 1;
            }
        }
        assert_eq!(claimed, 1, "{what}");
    }
}

pub async fn forgotten_addresses_free_the_address_but_not_the_uid(ledger: &dyn WelcomeLedger) {
    let (u, to) = (uid("forget"), email("forget@example.com"));
    let h = holder(1);
    ledger.claim(&u, &to, h, MONTH, LONG).await.unwrap();
    ledger.mark_sent(&u, h).await.unwrap();
    assert_eq!(
        ledger.forget_recipients(MONTH).await.unwrap(),
        0,
        "too recent"
    );
    assert_eq!(ledger.forget_recipients(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(
        ledger
            .claim(&uid("newcomer"), &to, holder(1), MONTH, LONG)
            .await
            .unwrap(),
        ClaimWelcomeOutcome::Claimed
    );
    assert_eq!(
        ledger.claim(&u, &to, holder(1), MONTH, LONG).await.unwrap(),
        ClaimWelcomeOutcome::AlreadySent
    );
}

/// One `#[tokio::test]` per case; `$make` is an async expression giving an
/// `Arc` of an empty ledger.
pub async fn the_record_shows_when_the_mail_was_claimed_and_sent(ledger: &dyn WelcomeLedger) {
    let (kim, h) = (uid("kim"), holder(1));
    assert_eq!(ledger.record(&kim).await.unwrap(), None);
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    ledger
        .claim(&kim, &email("kim@example.com"), h, MONTH, LONG)
        .await
        .unwrap();
    let claimed = ledger
        .record(&kim)
        .await
        .unwrap()
        .expect("a record once claimed");
    assert!(claimed.claimed_at >= before, "{claimed:?}");
    assert_eq!(claimed.sent_at, None);
    ledger.mark_sent(&kim, h).await.unwrap();
    let sent = ledger.record(&kim).await.unwrap().expect("still there");
    assert_eq!(sent.claimed_at, claimed.claimed_at);
    assert!(
        sent.sent_at.is_some_and(|at| at >= claimed.claimed_at),
        "{sent:?}"
    );
    // Another uid's record is not this one's.
    assert_eq!(ledger.record(&uid("lee")).await.unwrap(), None);
}

#[macro_export]
macro_rules! welcome_ledger_contract {
    ($make:expr) => {
        macro_rules! welcome_ledger_case {
            ($name:ident) => {
                #[tokio::test]
                async fn $name() {
                    let ledger = $make.await;
                    $crate::contract::ledger::$name(ledger.as_ref()).await;
                }
            };
        }
        welcome_ledger_case!(a_uid_is_welcomed_once_ever_whatever_the_address);
        welcome_ledger_case!(an_address_gets_one_welcome_per_window_whatever_the_uid);
        welcome_ledger_case!(another_attempt_is_busy_until_the_claim_is_released_or_stale);
        welcome_ledger_case!(a_later_lease_of_the_same_job_takes_the_claim_over_at_once);
        welcome_ledger_case!(forgotten_addresses_free_the_address_but_not_the_uid);
        welcome_ledger_case!(the_record_shows_when_the_mail_was_claimed_and_sent);
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_claims_give_one_claim() {
            let ledger = $make.await;
            $crate::contract::ledger::concurrent_claims_give_one_claim(ledger).await;
        }
    };
}

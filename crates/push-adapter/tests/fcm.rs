//! The FCM sender against a local server playing Google's token endpoint and
//! FCM: the exact requests, token caching and refresh, error classification.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use domain::PushToken;
use ports::{PushMessage, PushSender, SendPushError};
use ports_testing::contract::push::PushProviderHarness;
use push_adapter::{FCM_SCOPE, FcmSender, FcmSettings, ServiceAccountKey, fcm_message};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use test_support::{FAKE_FCM_CLIENT_EMAIL, FAKE_FCM_KEY_ID, FAKE_FCM_PROJECT, FakeFcm, FcmReply};

const FAILURE_WINDOW: Duration = Duration::from_millis(300);

fn settings(fake: &FakeFcm) -> FcmSettings {
    FcmSettings {
        base_url: fake.base_url(),
        token_failure_window: FAILURE_WINDOW,
        ..FcmSettings::new(FAKE_FCM_PROJECT)
    }
}

fn sender(fake: &FakeFcm) -> FcmSender {
    let key = ServiceAccountKey::from_json(&fake.service_account_json()).unwrap();
    FcmSender::new(&key, settings(fake)).unwrap()
}

fn token(s: &str) -> PushToken {
    PushToken::parse(s).unwrap()
}

fn message() -> PushMessage {
    PushMessage {
        title: Some("Hello".into()),
        body: Some("It works".into()),
        data: BTreeMap::from([("kind".into(), "test".into())]),
        high_priority: true,
        sound: Some("default".into()),
        badge: Some(1),
        collapse_key: Some("hello".into()),
    }
}

#[tokio::test]
async fn the_assertion_the_bearer_and_the_message_are_exactly_what_google_expects() {
    let fake = FakeFcm::start().await;
    let dir = std::env::temp_dir();
    let path = fake.write_credentials(&dir);
    let key = ServiceAccountKey::from_file(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(key.project_id.as_deref(), Some(FAKE_FCM_PROJECT));
    let s = FcmSender::new(&key, settings(&fake)).unwrap();
    let t = token("device-a");
    s.send(&t, &message()).await.unwrap();

    let oauth = fake.oauth_requests();
    assert_eq!(oauth.len(), 1);
    let o = &oauth[0];
    assert_eq!(o.grant_type, "urn:ietf:params:oauth:grant-type:jwt-bearer");
    assert!(
        o.signature_valid,
        "the assertion must verify with the service account's public key"
    );
    assert_eq!(o.header["alg"], "RS256");
    assert_eq!(o.header["typ"], "JWT");
    assert_eq!(o.header["kid"], FAKE_FCM_KEY_ID);
    assert_eq!(o.claims["iss"], FAKE_FCM_CLIENT_EMAIL);
    assert_eq!(o.claims["scope"], FCM_SCOPE);
    assert_eq!(o.claims["aud"], fake.token_url());
    let (iat, exp) = (
        o.claims["iat"].as_i64().unwrap(),
        o.claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 3600);
    assert!((iat - chrono::Utc::now().timestamp()).abs() < 60);

    let sends = fake.sends();
    assert_eq!(sends.len(), 1);
    let r = &sends[0];
    assert_eq!(
        r.path,
        format!("/v1/projects/{FAKE_FCM_PROJECT}/messages:send")
    );
    assert_eq!(
        r.authorization.as_deref(),
        Some(format!("Bearer {}", o.issued.as_deref().unwrap()).as_str())
    );
    assert!(
        r.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/json"))
    );
    assert_eq!(r.body, fcm_message(&t, &message()));
    assert_eq!(r.body["message"]["token"], "device-a");
    assert_eq!(r.body["message"]["notification"]["title"], "Hello");
    assert_eq!(r.body["message"]["android"]["priority"], "HIGH");
    assert_eq!(r.body["message"]["apns"]["payload"]["aps"]["badge"], 1);
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn an_access_token_is_reused_while_it_is_good() {
    let fake = FakeFcm::start().await;
    let s = sender(&fake);
    for i in 0..5 {
        s.send(&token(&format!("d{i}")), &message()).await.unwrap();
    }
    assert_eq!(fake.oauth_requests().len(), 1);
    assert_eq!(s.access_token_fetches(), 1);
    assert_eq!(fake.delivered().len(), 5);
}

async fn twenty_at_once(s: &FcmSender) -> Vec<Result<(), SendPushError>> {
    let msg = message();
    let tokens: Vec<PushToken> = (0..20).map(|i| token(&format!("burst-{i}"))).collect();
    futures_util::future::join_all(tokens.iter().map(|t| s.send(t, &msg))).await
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed_once_for_many_concurrent_sends() {
    let fake = FakeFcm::start().await;
    // Two-second tokens are used for one second (half their life).
    fake.set_token_lifetime(2);
    let s = sender(&fake);
    s.send(&token("first"), &message()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    fake.set_oauth_delay(Duration::from_millis(300));
    let results = twenty_at_once(&s).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let oauth = fake.oauth_requests();
    assert_eq!(oauth.len(), 2, "one refresh for twenty sends");
    let second = format!("Bearer {}", oauth[1].issued.as_deref().unwrap());
    let burst: Vec<_> = fake
        .sends()
        .into_iter()
        .filter(|r| r.token.as_deref().is_some_and(|t| t.starts_with("burst-")))
        .collect();
    assert_eq!(burst.len(), 20, "no send went out with the expired token");
    assert!(
        burst
            .iter()
            .all(|r| r.authorization.as_deref() == Some(&second) && r.status == 200)
    );
}

#[tokio::test]
async fn a_failing_token_endpoint_is_asked_once_per_window_however_many_sends_wait() {
    let fake = FakeFcm::start().await;
    let s = sender(&fake);
    fake.fail_oauth(503, "temporarily_unavailable", "try later");
    fake.set_oauth_delay(Duration::from_millis(100));
    let results = twenty_at_once(&s).await;
    assert_eq!(fake.oauth_requests().len(), 1, "one fetch for twenty sends");
    for r in &results {
        match r {
            Err(SendPushError::Unavailable { reason, .. }) => {
                assert!(reason.contains("temporarily_unavailable"), "{reason}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
    let waited: Vec<_> = results
        .iter()
        .filter_map(|r| match r {
            Err(SendPushError::Unavailable { retry_after, .. }) => *retry_after,
            _ => None,
        })
        .collect();
    assert_eq!(
        waited.len(),
        19,
        "those that shared the failure say when to retry"
    );
    assert!(waited.iter().all(|w| *w <= FAILURE_WINDOW));
    assert!(fake.sends().is_empty());
    // After the window, the endpoint is asked again.
    fake.heal_oauth();
    tokio::time::sleep(FAILURE_WINDOW).await;
    s.send(&token("after"), &message()).await.unwrap();
    assert_eq!(fake.oauth_requests().len(), 2);
}

#[tokio::test]
async fn a_revoked_access_token_is_replaced_once_for_many_concurrent_sends() {
    let fake = FakeFcm::start().await;
    let s = sender(&fake);
    s.send(&token("first"), &message()).await.unwrap();
    fake.revoke_access_tokens();
    fake.set_oauth_delay(Duration::from_millis(300));
    let results = twenty_at_once(&s).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        fake.oauth_requests().len(),
        2,
        "one refresh for twenty 401s"
    );
    let sends = fake.sends();
    assert_eq!(sends.iter().filter(|r| r.status == 401).count(), 20);
    assert_eq!(sends.iter().filter(|r| r.status == 200).count(), 21);
}

#[tokio::test]
async fn fcm_errors_are_classified_as_fcm_documents_them() {
    let fake = FakeFcm::start().await;
    let s = sender(&fake);
    let cases: Vec<(&str, FcmReply)> = vec![
        ("t-unregistered", FcmReply::unregistered()),
        ("t-invalid", FcmReply::invalid_token()),
        (
            "t-unavailable",
            FcmReply::unavailable().with_retry_after("7"),
        ),
        ("t-internal", FcmReply::internal()),
        ("t-quota", FcmReply::quota_exceeded()),
        ("t-sender", FcmReply::sender_id_mismatch()),
        ("t-apns-auth", FcmReply::third_party_auth_error()),
    ];
    let mut got = Vec::new();
    for (t, reply) in cases {
        fake.script(t, [reply]);
        let outcome = match s.send(&token(t), &message()).await {
            Ok(()) => "ok".to_owned(),
            Err(SendPushError::Unregistered) => "unregistered".into(),
            Err(SendPushError::InvalidToken) => "invalid".into(),
            Err(SendPushError::Unavailable { retry_after, .. }) => {
                format!("unavailable {retry_after:?}")
            }
            Err(SendPushError::Rejected { code }) => format!("rejected {code}"),
            Err(e) => format!("other {e}"),
        };
        got.push((t, outcome));
    }
    assert_eq!(
        got,
        vec![
            ("t-unregistered", "unregistered".to_owned()),
            ("t-invalid", "invalid".into()),
            ("t-unavailable", "unavailable Some(7s)".into()),
            ("t-internal", "unavailable None".into()),
            ("t-quota", "rejected QUOTA_EXCEEDED".into()),
            ("t-sender", "rejected SENDER_ID_MISMATCH".into()),
            ("t-apns-auth", "rejected THIRD_PARTY_AUTH_ERROR".into()),
        ]
    );
    // Each was tried once: none of these is retried in the adapter, and a
    // third-party (APNs) auth error is not mistaken for our token expiring.
    assert_eq!(fake.sends().len(), 7);
    assert_eq!(fake.oauth_requests().len(), 1);
    // The scripts are used up: the same tokens now deliver.
    s.send(&token("t-unavailable"), &message()).await.unwrap();
}

#[tokio::test]
async fn an_oversize_message_costs_no_request_at_all() {
    let fake = FakeFcm::start().await;
    let s = sender(&fake);
    let big = PushMessage {
        body: Some("x".repeat(5000)),
        ..PushMessage::default()
    };
    let err = s.send(&token("d"), &big).await.unwrap_err();
    assert!(
        matches!(err, SendPushError::PayloadTooLarge { max: 4096, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("max 4096"), "{err}");
    assert!(fake.sends().is_empty() && fake.oauth_requests().is_empty());
}

#[tokio::test]
async fn unreachable_endpoints_and_refused_credentials_are_temporary() {
    let fake = FakeFcm::start().await;
    let closed = test_support::free_port();
    let key = ServiceAccountKey::from_json(&fake.service_account_json()).unwrap();
    let s = FcmSender::new(
        &key,
        FcmSettings {
            base_url: format!("http://127.0.0.1:{closed}"),
            ..FcmSettings::new(FAKE_FCM_PROJECT)
        },
    )
    .unwrap();
    let err = s.send(&token("d"), &message()).await.unwrap_err();
    assert!(matches!(err, SendPushError::Unavailable { .. }), "{err:?}");

    let s = sender(&fake);
    fake.fail_oauth(400, "invalid_grant", "Invalid JWT Signature.");
    match s.send(&token("d"), &message()).await {
        Err(SendPushError::Unavailable { reason, .. }) => {
            assert!(reason.contains("invalid_grant"), "{reason}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(fake.sends().is_empty(), "nothing is sent without a token");
    fake.heal_oauth();
    tokio::time::sleep(FAILURE_WINDOW).await;
    s.send(&token("d"), &message()).await.unwrap();
    assert_eq!(fake.delivered(), vec!["d".to_owned()]);
}

#[tokio::test]
async fn errors_never_carry_the_device_token() {
    let fake = FakeFcm::start().await;
    let s = sender(&fake);
    let secret = "super-secret-device-token";
    for reply in [
        FcmReply::unregistered(),
        FcmReply::unavailable(),
        FcmReply::quota_exceeded(),
    ] {
        fake.script(secret, [reply]);
        let err = s.send(&token(secret), &message()).await.unwrap_err();
        assert!(!format!("{err} {err:?}").contains(secret));
    }
}

/// The real sender behind the scripted server, for the contract suite.
struct Harness {
    fake: FakeFcm,
    sender: FcmSender,
}

impl PushProviderHarness for Harness {
    fn sender(&self) -> &dyn PushSender {
        &self.sender
    }
    fn unregister(&self, token: &PushToken) {
        self.fake.unregister(token.as_str());
    }
    fn begin_outage(&self, retry_after: Duration) {
        self.fake.begin_outage(&retry_after.as_secs().to_string());
    }
    fn end_outage(&self) {
        self.fake.end_outage();
    }
    fn delivered(&self) -> Vec<PushToken> {
        self.fake.delivered().iter().map(|t| token(t)).collect()
    }
}

mod contract {
    use super::*;

    async fn make() -> Arc<Harness> {
        let fake = FakeFcm::start().await;
        let sender = sender(&fake);
        Arc::new(Harness { fake, sender })
    }

    ports_testing::push_sender_contract!(make());
}

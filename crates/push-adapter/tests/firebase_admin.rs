//! `FirebaseUserAdmin` against the real Firebase Auth emulator.

#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use domain::FirebaseUid;
use ports::IdentityAdmin as _;
use push_adapter::FirebaseUserAdmin;
use test_support::{AuthEmulator, EMULATOR_PROJECT};

async fn lookup(http: &reqwest::Client, emulator: &AuthEmulator, uid: &str) -> bool {
    let body: serde_json::Value = http
        .post(format!("{}/accounts:lookup", emulator.identity_toolkit()))
        .bearer_auth("owner")
        .json(&serde_json::json!({ "localId": [uid] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["users"].as_array().is_some_and(|u| !u.is_empty())
}

#[tokio::test]
async fn a_firebase_user_is_deleted_once_and_deleting_again_is_fine() {
    let emulator = AuthEmulator::start();
    let http = reqwest::Client::new();
    for uid in ["leaving", "staying"] {
        let status = http
            .post(format!("{}/accounts", emulator.identity_toolkit()))
            .bearer_auth("owner")
            .json(&serde_json::json!({ "localId": uid, "email": format!("{uid}@example.com") }))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "creating {uid}: {status}");
    }
    assert!(lookup(&http, &emulator, "leaving").await);

    let admin = FirebaseUserAdmin::emulator(&emulator.host(), EMULATOR_PROJECT).unwrap();
    let leaving = FirebaseUid::parse("leaving").unwrap();
    admin.delete_user(&leaving).await.unwrap();
    assert!(!lookup(&http, &emulator, "leaving").await, "deleted");
    assert!(lookup(&http, &emulator, "staying").await, "only that one");
    admin.delete_user(&leaving).await.unwrap();

    // Another project's users are not reachable this way: a refusal, not
    // a silent success.
    let elsewhere = FirebaseUserAdmin::emulator(&emulator.host(), "demo-other").unwrap();
    let staying = FirebaseUid::parse("staying").unwrap();
    let outcome = elsewhere.delete_user(&staying).await;
    assert!(lookup(&http, &emulator, "staying").await, "{outcome:?}");
}

#[tokio::test]
async fn an_unreachable_identity_toolkit_is_unavailable() {
    let port = test_support::free_port();
    let admin =
        FirebaseUserAdmin::emulator(&format!("127.0.0.1:{port}"), EMULATOR_PROJECT).unwrap();
    assert!(matches!(
        admin.delete_user(&FirebaseUid::parse("x").unwrap()).await,
        Err(ports::IdentityAdminError::Unavailable(_))
    ));
}

//! `FirebaseUserAdmin` against the real Firebase Auth emulator.

use domain::FirebaseUid;
use ports::IdentityAdmin as _;
use push_adapter::FirebaseUserAdmin;
use test_support::{AuthEmulator, EMULATOR_PROJECT};

#[tokio::test]
async fn a_firebase_user_is_deleted_once_and_deleting_again_is_fine() {
    let emulator = AuthEmulator::start();
    for uid in ["leaving", "staying"] {
        emulator
            .create_user(uid, Some(&format!("{uid}@example.com")))
            .await;
    }
    assert!(emulator.has_user("leaving").await);

    let admin = FirebaseUserAdmin::emulator(&emulator.host(), EMULATOR_PROJECT).unwrap();
    let leaving = FirebaseUid::parse("leaving").unwrap();
    admin.delete_user(&leaving).await.unwrap();
    assert!(!emulator.has_user("leaving").await, "deleted");
    assert!(emulator.has_user("staying").await, "only that one");
    admin.delete_user(&leaving).await.unwrap();

    // Another project's users are not reachable this way: a refusal, not
    // a silent success.
    let elsewhere = FirebaseUserAdmin::emulator(&emulator.host(), "demo-other").unwrap();
    let staying = FirebaseUid::parse("staying").unwrap();
    let outcome = elsewhere.delete_user(&staying).await;
    assert!(emulator.has_user("staying").await, "{outcome:?}");
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

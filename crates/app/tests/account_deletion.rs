//! `DELETE /api/v1/me` end to end: the saga the outbox starts removes the
//! user's stored objects, cancels their queued jobs and deletes their
//! Firebase Auth account (in the real Auth emulator).

use ports::JobQueue as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use test_support::{AuthEmulator, EMULATOR_PROJECT, HttpObjectClient, files_under, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_account_leaves_nothing_behind() {
    let emulator = AuthEmulator::start();
    let host = emulator.host();
    let app = spawn_app_with(
        app::Role::All,
        &[
            ("FIREBASE_AUTH_EMULATOR_HOST", host.as_str()),
            ("FIREBASE_PROJECT_ID", EMULATOR_PROJECT),
        ],
    )
    .await;
    for uid in ["zoe", "yan"] {
        emulator.create_user(uid, None).await;
    }
    let token = app.token_with("zoe", Some("zoe@example.com"), Some("Zoe"));

    // An avatar in the store.
    let created: Value = app
        .client
        .post(app.url("/api/v1/uploads"))
        .bearer_auth(&token)
        .json(&json!({"purpose": "avatar", "content_type": "image/png", "size": 10}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let form = HttpObjectClient::form_of(&created).unwrap();
    let (s, _) = HttpObjectClient::new().post(&form, vec![7; 10]).await;
    assert!(s.to_string().starts_with('2'));
    let res = app
        .client
        .post(app.url(&format!(
            "/api/v1/uploads/{}/complete",
            created["id"].as_str().unwrap()
        )))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let storage = app.settings.storage.local_dir.join("objects");
    assert_eq!(files_under(&storage), 1);

    // A job that would carry Zoe's data tomorrow, and one of someone else.
    let queue = queue_adapter::RedisJobQueue::new(
        queue_adapter::build_pool(&app.settings.redis.pool_settings()).unwrap(),
        app.settings.redis.queue_settings(),
    );
    let tomorrow = chrono::Utc::now() + chrono::Duration::days(1);
    let mut queued = Vec::new();
    for uid in ["zoe", "yan"] {
        let job = ports::NewJob::new("push:send", 1, &json!({ "uid": uid }))
            .unwrap()
            .run_at(tomorrow)
            .owned_by(uid);
        queued.push(queue.enqueue(job).await.unwrap());
    }
    let [zoes, yans] = queued[..] else {
        unreachable!("two jobs were queued")
    };

    let res = app
        .client
        .delete(app.url("/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "accepted");

    // The saga: the outbox relay, the consumer group, then four jobs each
    // enqueued by the one before (an enqueue wakes an idle worker). A
    // few seconds normally; 30 s leaves room for a busy machine.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let gone = !emulator.has_user("zoe").await
            && files_under(&storage) == 0
            && queue.job(&zoes.to_string()).await.unwrap().is_none();
        if gone {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the deletion saga did not finish: firebase={} files={} job={}",
            emulator.has_user("zoe").await,
            files_under(&storage),
            queue.job(&zoes.to_string()).await.unwrap().is_some()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(emulator.has_user("yan").await, "only Zoe's account");
    assert!(
        queue.job(&yans.to_string()).await.unwrap().is_some(),
        "only Zoe's jobs"
    );
    for state in [
        queue_adapter::JobState::Retry,
        queue_adapter::JobState::Dead,
    ] {
        let stuck = queue
            .list_of_kind("default", state, "account:erase", None, 10)
            .await
            .unwrap();
        assert!(stuck.jobs.is_empty(), "no step failed: {:?}", stuck.jobs);
    }
}

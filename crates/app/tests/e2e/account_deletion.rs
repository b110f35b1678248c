//! `DELETE /api/v1/me` end to end: the saga the outbox starts removes the
//! user's stored objects, cancels their queued jobs and deletes their
//! Firebase Auth account (in the real Auth emulator).

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use ports::JobQueue as _;
use reqwest::StatusCode;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use std::time::Duration;
use test_support::{AuthEmulator, EMULATOR_PROJECT, HttpObjectClient, files_under, spawn_app_with};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

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
    // Distinctive personal data, to look for everywhere afterwards.
    const ADDRESS: &str = "zoe.quartermaine@example.com";
    const NAMES: [&str; 2] = ["Zoe Quartermaine", "Zed Renamed"];
    let token = app.token_with("zoe", Some(ADDRESS), Some(NAMES[0]));
    // A socket, and a rename it hears about (recorded in its history).
    let mut listener = format!("ws://127.0.0.1:{}/ws", app.port)
        .into_client_request()
        .unwrap();
    listener
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (socket, _) = tokio_tungstenite::connect_async(listener).await.unwrap();
    for body in [json!({}), json!({"display_name": NAMES[1]})] {
        let res = app
            .client
            .patch(app.url("/api/v1/me"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
    }

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
        queue_adapter::build_pool(&app.settings.redis.pool_settings(4)).unwrap(),
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
    let deleted_at = chrono::Utc::now();

    // The app launches again a second later with the ID token it holds
    // (valid for up to an hour): it registers its push token and opens its
    // socket. Neither may bring the account back, or the saga would skip
    // its steps for "a uid that signed up again".
    let res = app
        .client
        .post(app.url("/api/v1/push-tokens"))
        .bearer_auth(&token)
        .json(&json!({"token": "fcm-zoe-after", "platform": "ios"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let mut ws = format!("ws://127.0.0.1:{}/ws", app.port)
        .into_client_request()
        .unwrap();
    ws.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(ws).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 401),
        other => panic!("the upgrade with a revoked token: {other:?}"),
    }

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
    drop(socket);
    // Her address and her names are nowhere: no table, no stream or dead
    // letter, no realtime history, no job.
    for needle in std::iter::once(ADDRESS).chain(NAMES) {
        let tables = app
            .db
            .scalar(&format!(
                "SELECT count(*) AS value FROM (
                   SELECT query_to_xml(format('SELECT * FROM %I.%I', table_schema, table_name),
                                       true, false, '')::text AS dump
                     FROM information_schema.tables
                    WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
                 ) t WHERE dump LIKE '%{needle}%'"
            ))
            .await;
        assert_eq!(tables, 0, "{needle} is still in {tables} table(s)");
        let keys = redis_keys_holding(
            app.settings.redis.url.expose_secret(),
            &app.settings.redis.key_prefix,
            needle,
        )
        .await;
        assert!(keys.is_empty(), "{needle} is still in Redis: {keys:?}");
    }
    // A genuinely new sign-up afterwards works: a token issued after the
    // deletion (`iat` counts whole seconds, so the next one).
    let next_second = deleted_at
        + chrono::Duration::milliseconds(1000 - i64::from(deleted_at.timestamp_subsec_millis()));
    if let Ok(wait) = (next_second - chrono::Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
    let fresh = app.token_with("zoe", Some("zoe@example.com"), Some("Zoe"));
    let res = app
        .client
        .patch(app.url("/api/v1/me"))
        .bearer_auth(&fresh)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
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

/// The keys under `prefix` whose contents (any type) mention `needle`.
async fn redis_keys_holding(url: &str, prefix: &str, needle: &str) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0_u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("*{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let mut holding = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let dump: redis::Value = match kind.as_str() {
            "string" => redis::cmd("GET").arg(&key).query_async(&mut conn).await,
            "hash" => redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await,
            "list" => {
                redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
            }
            "set" => {
                redis::cmd("SMEMBERS")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
            }
            "zset" => {
                redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
            }
            "stream" => {
                redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut conn)
                    .await
            }
            _ => Ok(redis::Value::Nil),
        }
        .unwrap();
        if format!("{dump:?}").contains(needle) || text_of(&dump).contains(needle) {
            holding.push(key);
        }
    }
    holding
}

/// Every string in a reply, concatenated.
fn text_of(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            items.iter().map(text_of).collect::<Vec<_>>().join("\n")
        }
        redis::Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| format!("{} {}", text_of(k), text_of(v)))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

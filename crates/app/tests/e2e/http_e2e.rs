//! The whole application against real Postgres and Redis, over real HTTP.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use test_support::spawn_app;

#[tokio::test]
async fn readyz_reports_both_dependencies_and_metrics_count_requests() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body,
        json!({"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}})
    );
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("http_requests_total{method=\"GET\",route=\"/readyz\",status=\"200\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_profile_lifecycle_works_on_postgres() {
    let app = spawn_app().await;
    let token = app.token_with("e2e-user", Some("e2e@example.com"), Some("E2E"));
    let (s, created) = app.patch_me(&token, &json!({})).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(created["display_name"], "E2E", "claims seed a new profile");

    let got: Value = app
        .client
        .get(app.url("/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["id"], created["id"]);

    let (s, updated) = app
        .patch_me(&token, &json!({"display_name": "Renamed"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(updated["display_name"], "Renamed");

    let res = app
        .client
        .delete(app.url("/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let res = app
        .client
        .get(app.url("/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "the token was issued before the deletion"
    );
    assert_eq!(res.headers()["content-type"], "application/problem+json");

    let events = app.db.scalar("SELECT count(*) AS value FROM outbox").await;
    assert_eq!(events, 3, "created, updated, deleted");
}

#[tokio::test]
async fn twenty_concurrent_first_requests_create_one_user_and_one_event() {
    let app = spawn_app().await;
    let token = app.token("racer");
    let requests = (0..20).map(|i| {
        let (client, url, token) = (app.client.clone(), app.url("/api/v1/me"), token.clone());
        async move {
            client
                .patch(url)
                .bearer_auth(token)
                .json(&json!({"display_name": format!("Racer {i}")}))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(
        app.db.scalar("SELECT count(*) AS value FROM users").await,
        1
    );
    assert_eq!(
        app.db
            .scalar("SELECT count(*) AS value FROM outbox WHERE event_type = 'user.created'")
            .await,
        1
    );
}

#[tokio::test]
async fn registering_a_push_token_first_creates_the_user_once() {
    let app = spawn_app().await;
    let token = app.token_with("pusher", Some("p@example.com"), None);
    for t in ["device-a", "device-b", "device-a"] {
        let res = app
            .client
            .post(app.url("/api/v1/push-tokens"))
            .bearer_auth(&token)
            .json(&json!({"token": t, "platform": "ios"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let me: Value = app
        .client
        .get(app.url("/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        me["email"], "p@example.com",
        "seeded from the token's claims"
    );
    let (s, _) = app
        .patch_me(&token, &json!({"display_name": "Later"}))
        .await;
    assert_eq!(s, StatusCode::OK, "the profile already existed");
    assert_eq!(
        app.db
            .scalar("SELECT count(*) AS value FROM outbox WHERE event_type = 'user.created'")
            .await,
        1
    );
    assert_eq!(
        app.db
            .scalar("SELECT count(*) AS value FROM push_tokens")
            .await,
        2
    );
    let page: Value = app
        .client
        .get(app.url("/api/v1/push-tokens?limit=1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(page["next_cursor"].is_string());
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused_while_it_is_read() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = spawn_app().await;
    let token = app.token("chunky");
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let head = format!(
        "PATCH /api/v1/me HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    // No Content-Length: only counting while reading can catch it. 80 KiB
    // of a JSON string, in 8 KiB chunks, over the 64 KiB limit.
    let chunk = "x".repeat(8 * 1024);
    let start = "{\"email\": \"aa";
    let mut sent = sock
        .write_all(format!("{:X}\r\n{start}\r\n", start.len()).as_bytes())
        .await
        .is_ok();
    for _ in 0..10 {
        if !sent {
            break; // the server answered and closed early: fine
        }
        let frame = format!("{:X}\r\n{chunk}\r\n", chunk.len());
        sent = sock.write_all(frame.as_bytes()).await.is_ok();
    }
    let _ = sock.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        sock.read_to_end(&mut answer),
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    assert_eq!(
        app.db.scalar("SELECT count(*) AS value FROM users").await,
        0,
        "nothing was stored"
    );
}

#[tokio::test]
async fn the_export_shows_the_profile_the_devices_and_the_welcome_mail_from_postgres() {
    let app = spawn_app().await;
    let token = app.token_with("rae", Some("rae@example.com"), Some("Rae"));
    let res = app
        .client
        .post(app.url("/api/v1/push-tokens"))
        .bearer_auth(&token)
        .json(&json!({"token": "rae-phone-token", "platform": "android"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // The welcome mail goes out through the outbox, the stream and the
    // queue; the export shows it once the ledger says it was sent (the
    // pipeline's own tests bound it well within this).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let export = loop {
        let res = app
            .client
            .get(app.url("/api/v1/me/export"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let export: Value = res.json().await.unwrap();
        if export["welcome_mail"]["sent_at"].is_string() {
            break export;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the welcome mail never showed as sent: {export}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(export["profile"]["uid"], "rae");
    assert_eq!(export["profile"]["email"], "rae@example.com");
    assert_eq!(export["devices"].as_array().unwrap().len(), 1);
    assert_eq!(export["devices"][0]["platform"], "android");
    assert_eq!(
        export["devices"][0]["fingerprint"],
        domain::PushToken::parse("rae-phone-token")
            .unwrap()
            .fingerprint()
    );
    assert!(!export.to_string().contains("rae-phone-token"));
    assert!(export["welcome_mail"]["claimed_at"].is_string());
    // What else is stored: the address the provider vouched for, and the
    // event log's entries about her (published by now: her mail went).
    assert_eq!(export["verified_email"], "rae@example.com");
    let events = export["events"].as_array().unwrap();
    assert_eq!(events[0]["type"], "user.created");
    assert_eq!(events[0]["data"]["uid"], "rae");
    assert!(events[0]["published_at"].is_string());
    assert!(export["jobs"].is_array());
}

/// `/docs` renders in headless Chromium with the network unplugged: Swagger
/// UI comes from the app itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_renders_offline() {
    let app = spawn_app().await;
    let browser = test_support::Browser::start_offline("docs-offline").await;
    browser.goto(&app.url("/docs")).await;
    // Rendered from the spec by the vendored bundle: an operation's path.
    browser
        .wait_for_text("/api/v1/uploads/{id}/complete", Duration::from_secs(20))
        .await;
}

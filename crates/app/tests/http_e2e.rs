//! The whole application against real Postgres and Redis, over real HTTP.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{TestApp, spawn_app};

async fn patch_me(app: &TestApp, token: &str, body: Value) -> (StatusCode, Value) {
    let res = app
        .client
        .patch(app.url("/api/v1/me"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

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
    let (s, created) = patch_me(&app, &token, json!({})).await;
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

    let (s, updated) = patch_me(&app, &token, json!({"display_name": "Renamed"})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(updated["display_name"], "Renamed");

    let res = app
        .client
        .delete(app.url("/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app
        .client
        .get(app.url("/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
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
    let (s, _) = patch_me(&app, &token, json!({"display_name": "Later"})).await;
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

//! What operators chart is really recorded: a new user's way through the
//! whole pipeline shows up on `/metrics` of the process that did the work.

use app::Role;
use ports_testing::contract::eventually;
use serde_json::json;
use std::time::Duration;
use test_support::spawn_app_with;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// The sum of every sample whose line starts with `prefix` (a metric name
/// and, optionally, the start of its labels); `None` if there is none.
fn sum(text: &str, prefix: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_and_the_hub_are_visible_on_metrics() {
    let app = spawn_app_with(Role::All, &[("STREAM_CLAIM_IDLE_MS", "1000")]).await;
    let token = app.token_with("metered", Some("metered@example.com"), Some("Metered"));
    let res = app
        .client
        .patch(app.url("/api/v1/me"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    // The mail is counted when it is sent; its job's outcome only once the
    // completion is persisted, a moment later.
    let text = eventually(
        "the mail and its job, on metrics",
        Duration::from_secs(30),
        || async {
            let text = app.metrics().await;
            (sum(&text, "mail_sent_total{outcome=\"sent\"}") == Some(1.0)
                && sum(&text, "jobs_processed_total{").is_some())
            .then_some(text)
        },
    )
    .await;
    for (prefix, at_least) in [
        ("outbox_published_total", 1.0),
        ("events_published_total", 1.0),
        ("stream_entries_processed_total", 1.0),
        ("jobs_enqueued_total", 1.0),
        ("jobs_processed_total", 1.0),
        ("job_duration_seconds_count", 1.0),
        ("job_wait_seconds_count", 1.0),
        ("mail_send_duration_seconds_count", 1.0),
        (
            "http_requests_total{method=\"PATCH\",route=\"/api/v1/me\",status=\"201\"}",
            1.0,
        ),
    ] {
        let got = sum(&text, prefix);
        assert!(
            got.is_some_and(|v| v >= at_least),
            "{prefix}: {got:?}\n{text}"
        );
    }
    // The gauges operators alert on, settled once the work is done.
    let text = eventually("the gauges", Duration::from_secs(30), || async {
        let text = app.metrics().await;
        let settled = sum(&text, "stream_group_lag{").is_some_and(|v| v == 0.0)
            && sum(&text, "stream_group_pending{").is_some_and(|v| v == 0.0)
            && sum(&text, "stream_dead_letter_length{").is_some_and(|v| v == 0.0)
            && sum(&text, "queue_jobs{queue=\"mail\",state=\"pending\"}") == Some(0.0)
            // The stats loop sets the five states one after another: a
            // scrape in between sees only some of them.
            && ["scheduled", "active", "retry", "dead"].iter().all(|state| {
                sum(&text, &format!("queue_jobs{{queue=\"mail\",state=\"{state}\"}}")).is_some()
            })
            && sum(&text, "outbox_backlog") == Some(0.0);
        settled.then_some(text)
    })
    .await;
    assert_eq!(
        sum(&text, "queue_jobs{queue=\"mail\",state=\"dead\"}"),
        Some(0.0),
        "{text}"
    );

    // A socket is counted while it is open.
    let mut req = format!("ws://127.0.0.1:{}/ws", app.port)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    eventually("one socket", Duration::from_secs(10), || async {
        (sum(&app.metrics().await, "ws_connections") == Some(1.0)).then_some(())
    })
    .await;
    drop(ws);
    eventually("no socket", Duration::from_secs(10), || async {
        (sum(&app.metrics().await, "ws_connections") == Some(0.0)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_metrics_addr_metrics_leave_the_public_listener() {
    let app = spawn_app_with(Role::Serve, &[("METRICS_ADDR", "127.0.0.1:0")]).await;
    let port = app.metrics_port.expect("a metrics listener of its own");
    assert_ne!(port, app.port);
    // Something to count first.
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let public = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), 404, "not on the public listener");
    assert_eq!(public.headers()["content-type"], "application/problem+json");
    let own = app
        .client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    let text = own.text().await.unwrap();
    assert!(
        text.contains("http_requests_total"),
        "the public listener's requests are counted there: {text}"
    );
    let other = app
        .client
        .get(format!("http://127.0.0.1:{port}/api/v1/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404, "nothing else is served there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_a_client_invents_never_become_metric_labels() {
    let app = spawn_app_with(Role::Serve, &[]).await;
    let before = app.metrics().await.len();
    // Tokens of 2 kB each; every one used to add a counter and a histogram
    // series of its own, kept for the life of the process.
    for i in 0..40 {
        let method =
            reqwest::Method::from_bytes(format!("X{i:02}{}", "M".repeat(2000)).as_bytes()).unwrap();
        let res = app
            .client
            .request(method, app.url("/api/v1/me"))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_client_error(), "{}", res.status());
    }
    let text = app.metrics().await;
    assert!(!text.contains("MMMMMMMM"), "a method token became a label");
    let other = sum(&text, "http_requests_total{method=\"other\"");
    assert_eq!(other, Some(40.0), "{text}");
    // The 40 requests added a handful of series, not 80 of 2 kB each.
    assert!(
        text.len() < before + 8 * 1024,
        "/metrics grew by {} bytes",
        text.len() - before
    );
}

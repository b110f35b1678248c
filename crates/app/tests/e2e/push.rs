//! Push notifications end to end: the whole app (HTTP, queue worker, Postgres,
//! Redis) sending through a local server that plays Google's OAuth2 token
//! endpoint and FCM HTTP v1.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use app::Role;
use domain::FirebaseUid;
use ports::{Notification, PushMessage};
use postgres_adapter::{PgPushTokenRepository, PgSettings};
use queue_adapter::{QueueSettings, RedisJobQueue};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use test_support::{FakeFcm, FcmReply, MetricsWindow, TestApp, spawn_app_with};
use usecases::{PushNotifications, SocketFirst};

use crate::support::{connect, ready, recv, send, wait_for_sockets};

struct Setup {
    fake: FakeFcm,
    app: TestApp,
    key_file: PathBuf,
    /// Every test here sends pushes: each counts alone.
    metrics: MetricsWindow,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.key_file);
    }
}

async fn setup() -> Setup {
    let fake = FakeFcm::start().await;
    let key_file = fake.write_credentials(&std::env::temp_dir());
    let base = fake.base_url();
    let app = spawn_app_with(
        Role::All,
        &[
            (
                "GOOGLE_APPLICATION_CREDENTIALS",
                &key_file.display().to_string(),
            ),
            ("FCM_BASE_URL", &base),
            ("JOB_RETRY_BASE_MS", "100"),
            ("WS_ACK_WAIT_SECS", "1"),
        ],
    )
    .await;
    let metrics = app.metrics_window().await;
    Setup {
        fake,
        app,
        key_file,
        metrics,
    }
}

async fn register(app: &TestApp, bearer: &str, token: &str, platform: &str) {
    let res = app
        .client
        .post(app.url("/api/v1/push-tokens"))
        .bearer_auth(bearer)
        .json(&json!({"token": token, "platform": platform}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

async fn my_tokens(app: &TestApp, bearer: &str) -> Vec<String> {
    let page: Value = app
        .client
        .get(app.url("/api/v1/push-tokens"))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["token"].as_str().unwrap().to_owned())
        .collect()
}

async fn test_push(app: &TestApp, bearer: &str) -> Value {
    let res = app
        .client
        .post(app.url("/api/v1/me/test-push"))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// How much a counter grew during this test.
async fn metric(s: &Setup, line_start: &str) -> Option<f64> {
    s.metrics.since(&s.app, line_start).await
}

/// What a use case does to notify a user: `PushNotifications::notify_user`.
fn notifications(app: &TestApp) -> PushNotifications {
    PushNotifications::new(
        Arc::new(PgPushTokenRepository::new(
            postgres_adapter::build_pool(&PgSettings::new(
                app.settings.database.url.expose_secret().to_owned(),
            ))
            .unwrap(),
        )),
        // Only the queue is used by notify_user.
        Arc::new(push_adapter::LogPushSender::new()),
        queue(app),
    )
}

fn queue(app: &TestApp) -> Arc<RedisJobQueue> {
    let redis = queue_adapter::build_pool(&queue_adapter::RedisSettings::new(
        app.settings.redis.url.expose_secret().to_owned(),
    ))
    .unwrap();
    Arc::new(RedisJobQueue::new(
        redis,
        QueueSettings::new(&app.settings.redis.key_prefix),
    ))
}

/// What a use case does to deliver socket first: `SocketFirst::notify`
/// (only its queue is used here; the app's worker runs the delivery).
fn socket_first(app: &TestApp) -> SocketFirst {
    let idle = ws_hub::HubNotifier::new(ws_hub::Hub::new(ws_hub::HubSettings::new("test")));
    SocketFirst::new(
        Arc::new(idle),
        notifications(app),
        queue(app),
        Duration::from_secs(1),
    )
}

#[tokio::test]
async fn a_queued_push_reaches_every_device_prunes_dead_ones_and_honours_retry_after() {
    let s = setup().await;
    let bob = s.app.token("bob");
    register(&s.app, &bob, "bob-phone", "ios").await;
    register(&s.app, &bob, "bob-old-phone", "android").await;
    register(&s.app, &bob, "bob-tablet", "android").await;
    s.fake.unregister("bob-old-phone");
    s.fake.script(
        "bob-tablet",
        [FcmReply::unavailable().with_retry_after("2")],
    );

    let message = PushMessage {
        title: Some("New follower".into()),
        body: Some("Ada follows you".into()),
        data: BTreeMap::from([("follower".into(), "ada".into())]),
        high_priority: true,
        ..PushMessage::default()
    };
    notifications(&s.app)
        .notify_user(&FirebaseUid::parse("bob").unwrap(), message)
        .await
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while s.fake.delivered().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered: {:?}",
            s.fake.sends()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut delivered = s.fake.delivered();
    delivered.sort();
    assert_eq!(delivered, ["bob-phone", "bob-tablet"]);

    // The phone: one message, exactly as FCM v1 wants it.
    let phone = s.fake.sends_to("bob-phone");
    assert_eq!(phone.len(), 1);
    assert_eq!(
        phone[0].body["message"]["notification"]["title"],
        "New follower"
    );
    assert_eq!(phone[0].body["message"]["data"]["follower"], "ada");
    assert_eq!(phone[0].body["message"]["android"]["priority"], "HIGH");
    // The old phone: UNREGISTERED once, and its token is gone.
    let old = s.fake.sends_to("bob-old-phone");
    assert_eq!(old.iter().map(|r| r.status).collect::<Vec<_>>(), [404]);
    // The tablet: 503 with Retry-After: 2, retried no sooner, delivered once.
    let tablet = s.fake.sends_to("bob-tablet");
    assert_eq!(
        tablet.iter().map(|r| r.status).collect::<Vec<_>>(),
        [503, 200]
    );
    let waited = tablet[1].at - tablet[0].at;
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");

    assert_eq!(my_tokens(&s.app, &bob).await, ["bob-phone", "bob-tablet"]);
    // One access token for all of it.
    assert_eq!(s.fake.oauth_requests().len(), 1);
    assert!(s.fake.oauth_requests()[0].signature_valid);
    assert_eq!(
        metric(&s, "push_sent_total{outcome=\"sent\"}").await,
        Some(2.0)
    );
    assert_eq!(
        metric(&s, "push_sent_total{outcome=\"pruned\"}").await,
        Some(1.0)
    );
    assert_eq!(
        metric(&s, "push_sent_total{outcome=\"unavailable\"}").await,
        Some(1.0)
    );
    assert_eq!(metric(&s, "push_tokens_pruned_total").await, Some(1.0));
}

#[tokio::test]
async fn the_test_push_endpoint_reports_each_device_through_fcm() {
    let s = setup().await;
    let ada = s.app.token("ada");
    register(&s.app, &ada, "ada-phone", "ios").await;
    register(&s.app, &ada, "ada-gone", "android").await;
    register(&s.app, &ada, "ada-busy", "web").await;
    s.fake.unregister("ada-gone");
    s.fake.script("ada-busy", [FcmReply::quota_exceeded()]);
    let body = test_push(&s.app, &ada).await;
    assert_eq!(
        body,
        json!({"live": true, "devices": 3, "sent": 1, "skipped": 0, "results": [
            {"token": "ada-busy", "platform": "web", "outcome": "rejected", "code": "QUOTA_EXCEEDED", "retry_after_secs": null},
            {"token": "ada-gone", "platform": "android", "outcome": "pruned", "code": "UNREGISTERED", "retry_after_secs": null},
            {"token": "ada-phone", "platform": "ios", "outcome": "sent", "code": null, "retry_after_secs": null},
        ]})
    );
    let sent = s.fake.sends_to("ada-phone");
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].body["message"]["notification"]["title"],
        "Test notification"
    );
    assert_eq!(my_tokens(&s.app, &ada).await, ["ada-phone", "ada-busy"]);
}

#[tokio::test]
async fn the_test_push_goes_to_the_most_recently_seen_devices_and_counts_the_rest() {
    let s = setup().await;
    let kim = s.app.token("kim");
    for i in 0..22 {
        register(&s.app, &kim, &format!("kim-{i:02}"), "android").await;
    }
    // Seen again: the oldest registration is now the newest device.
    register(&s.app, &kim, "kim-00", "android").await;
    let body = test_push(&s.app, &kim).await;
    assert_eq!(body["devices"], 20);
    assert_eq!(body["sent"], 20);
    assert_eq!(body["skipped"], 2);
    let tried: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["token"].as_str().unwrap())
        .collect();
    let mut expected = vec!["kim-00".to_owned()];
    expected.extend((3..22).rev().map(|i| format!("kim-{i:02}")));
    assert_eq!(tried, expected);
    assert!(s.fake.sends_to("kim-01").is_empty());
    assert!(s.fake.sends_to("kim-02").is_empty());
    assert_eq!(s.fake.sends_to("kim-00").len(), 1);
}

#[tokio::test]
async fn without_credentials_pushes_are_logged_and_the_report_says_so() {
    let app = spawn_app_with(Role::All, &[]).await;
    let eve = app.token("eve");
    register(&app, &eve, "eve-phone", "android").await;
    let body = test_push(&app, &eve).await;
    assert_eq!(body["live"], false);
    assert_eq!(body["results"][0]["outcome"], "sent");
}

#[tokio::test]
async fn a_bad_key_file_stops_the_app_with_a_clear_message() {
    let db = test_support::TestDb::new().await;
    let redis = test_support::TestRedis::new().await;
    let path =
        std::env::temp_dir().join(format!("not-a-key-{}.json", test_support::unique_suffix()));
    std::fs::write(&path, r#"{"type": "authorized_user"}"#).unwrap();
    let settings = test_support::test_settings(
        &db,
        &redis,
        &[(
            "GOOGLE_APPLICATION_CREDENTIALS",
            &path.display().to_string(),
        )],
    );
    let err = app::Application::build(settings, Role::Worker)
        .await
        .unwrap_err();
    let _ = std::fs::remove_file(&path);
    let text = format!("{err:#}");
    assert!(text.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{text}");
    assert!(
        text.contains("not a Google service-account key file"),
        "{text}"
    );
}

/// Waits until `token`'s device got `n` messages, within `within`.
async fn wait_for_pushes(
    s: &Setup,
    token: &str,
    n: usize,
    within: Duration,
) -> Vec<test_support::FcmRequest> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let sends = s.fake.sends_to(token);
        if sends.len() >= n {
            return sends;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{token}: {} of {n} pushes",
            sends.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn chat(text: &str) -> (Notification, PushMessage) {
    (
        Notification::new("chat.message", json!({"text": text})),
        PushMessage {
            title: Some("Ada".into()),
            body: Some(text.into()),
            ..PushMessage::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_goes_over_the_socket_when_acked_and_through_fcm_otherwise() {
    let s = setup().await;
    let token = s.app.token("fern");
    register(&s.app, &token, "fern-phone", "ios").await;
    let fern = FirebaseUid::parse("fern").unwrap();
    let deliveries = socket_first(&s.app);
    let collapse = |r: &test_support::FcmRequest| {
        let m = &r.body["message"];
        (
            m["android"]["collapse_key"].clone(),
            m["apns"]["headers"]["apns-collapse-id"].clone(),
            m["data"]["delivery"].clone(),
        )
    };

    // Offline: straight to FCM, collapsed by the delivery id.
    let (n, p) = chat("one");
    deliveries.notify(&fern, "d-offline", n, p).await.unwrap();
    let sent = wait_for_pushes(&s, "fern-phone", 1, Duration::from_secs(10)).await;
    assert_eq!(
        collapse(&sent[0]),
        (json!("d-offline"), json!("d-offline"), json!("d-offline"))
    );

    // Online and acking: the socket has it, FCM does not.
    let mut phone = connect(&s.app, &token).await;
    ready(&mut phone).await;
    wait_for_sockets(&s.app, "fern", 1).await;
    let (n, p) = chat("two");
    deliveries.notify(&fern, "d-acked", n, p).await.unwrap();
    let got = recv(&mut phone).await;
    assert_eq!(got["type"], "chat.message", "{got}");
    assert_eq!(got["delivery"], "d-acked");
    assert_eq!(got["data"]["text"], "two");
    send(
        &mut phone,
        json!({"type": "ack", "data": {"delivery": "d-acked"}}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(&s, "realtime_deliveries_total{via=\"socket\"}").await != Some(1.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never counted as acked"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        s.fake.sends_to("fern-phone").len(),
        1,
        "no push for what the socket acked"
    );

    // Online and silent: the socket gets it, then FCM after the ack wait.
    let (n, p) = chat("three");
    let asked = std::time::Instant::now();
    deliveries.notify(&fern, "d-silent", n, p).await.unwrap();
    assert_eq!(recv(&mut phone).await["delivery"], "d-silent");
    let sent = wait_for_pushes(&s, "fern-phone", 2, Duration::from_secs(15)).await;
    assert_eq!(
        collapse(&sent[1]),
        (json!("d-silent"), json!("d-silent"), json!("d-silent"))
    );
    assert!(
        sent[1].at.duration_since(asked) >= Duration::from_secs(1),
        "pushed before the socket's second to ack"
    );
    assert_eq!(
        metric(&s, "realtime_deliveries_total{via=\"push_offline\"}").await,
        Some(1.0)
    );
    assert_eq!(
        metric(&s, "realtime_deliveries_total{via=\"push_unacked\"}").await,
        Some(1.0)
    );
}

//! The HTTP API end to end in-process, against the `ports::testing` fakes.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::{StatusCode, header};
use actix_web::test::{self, TestRequest};
use async_trait::async_trait;
use domain::{CursorCodec, FirebaseUid, VerifiedIdentity};
use http_api::{ApiState, HttpSettings, OpsState, Readiness, build_app, openapi_bytes};
use ports::testing::{
    FakeTokenVerifier, InMemoryStore, PushOutcome, RecordingJobQueue, RecordingPushSender,
};
use ports::{HealthProbe, ProbeError};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use usecases::{ProfileService, PushNotifications, PushTokenService};

const ALICE: &str = "token-alice";
const BOB: &str = "token-bob";

struct Probe {
    name: &'static str,
    up: AtomicBool,
    /// Never answers (a dependency that accepts connections and hangs).
    hangs: AtomicBool,
}

#[async_trait]
impl HealthProbe for Probe {
    fn name(&self) -> &'static str {
        self.name
    }
    async fn check(&self) -> Result<(), ProbeError> {
        if self.hangs.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.up.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(ProbeError {
                dependency: self.name,
                source: anyhow::anyhow!("connection refused"),
            })
        }
    }
}

struct Harness {
    store: Arc<InMemoryStore>,
    redis: Arc<Probe>,
    postgres: Arc<Probe>,
    push: Arc<RecordingPushSender>,
    state: ApiState,
}

fn harness_with(users: Arc<dyn ports::UserRepository>, store: Arc<InMemoryStore>) -> Harness {
    let verifier = Arc::new(FakeTokenVerifier::new());
    let mut alice = VerifiedIdentity::new(FirebaseUid::parse("alice").unwrap());
    alice.email = Some("alice@example.com".into());
    alice.name = Some("Alice From Token".into());
    verifier.allow(ALICE, alice);
    verifier.allow_uid(BOB, "bob");
    let redis = Arc::new(Probe {
        name: "redis",
        up: AtomicBool::new(true),
        hangs: AtomicBool::new(false),
    });
    let postgres = Arc::new(Probe {
        name: "postgres",
        up: AtomicBool::new(true),
        hangs: AtomicBool::new(false),
    });
    let push = Arc::new(RecordingPushSender::new());
    let state = ApiState {
        profiles: ProfileService::new(users),
        push_tokens: PushTokenService::new(store.clone(), CursorCodec::new(b"test".to_vec())),
        push: PushNotifications::new(
            store.clone(),
            push.clone(),
            Arc::new(RecordingJobQueue::new()),
        ),
        verifier,
        ops: OpsState {
            // No caching between calls: each test flips a probe and looks.
            readiness: Readiness::new(
                vec![postgres.clone(), redis.clone()],
                std::time::Duration::from_millis(500),
                std::time::Duration::ZERO,
            ),
            metrics: Some(Arc::new(|| "# metrics\nhttp_requests_total 1\n".to_owned())),
            draining: Arc::default(),
        },
        settings: HttpSettings {
            json_limit: 1024,
            ..HttpSettings::default()
        },
        rate_limiter: None,
    };
    Harness {
        store,
        redis,
        postgres,
        push,
        state,
    }
}

fn harness() -> Harness {
    let store = Arc::new(InMemoryStore::new());
    harness_with(store.clone(), store)
}

async fn app(
    h: &Harness,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    test::init_service(build_app(h.state.clone(), openapi_bytes(), |_| {})).await
}

async fn call<S, B>(app: &S, req: TestRequest) -> (StatusCode, header::HeaderMap, Value)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let res = test::call_service(app, req.to_request()).await;
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = test::read_body(res).await;
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    (status, headers, body)
}

fn authed(req: TestRequest, token: &str) -> TestRequest {
    req.insert_header((header::AUTHORIZATION, format!("Bearer {token}")))
}

fn assert_problem(
    status: StatusCode,
    headers: &header::HeaderMap,
    body: &Value,
    want: StatusCode,
    code: &str,
) {
    assert_eq!(status, want, "{body}");
    assert_eq!(
        headers.get(header::CONTENT_TYPE).unwrap(),
        "application/problem+json"
    );
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], want.as_u16());
    assert!(body["type"].as_str().unwrap().ends_with(code));
    assert!(body["title"].is_string() && body["detail"].is_string());
}

#[actix_web::test]
async fn patch_me_creates_then_updates_and_delete_removes() {
    let h = harness();
    let app = app(&h).await;
    let (s, _, body) = call(
        &app,
        authed(TestRequest::patch().uri("/api/v1/me"), ALICE)
            .set_json(json!({"display_name": "  Alice  "})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["display_name"], "Alice");
    assert_eq!(
        body["email"], "alice@example.com",
        "email comes from the token's claims"
    );
    assert_eq!(body["uid"], "alice");

    let (s, _, got) = call(&app, authed(TestRequest::get().uri("/api/v1/me"), ALICE)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["id"], body["id"]);

    let (s, _, again) = call(
        &app,
        authed(TestRequest::patch().uri("/api/v1/me"), ALICE)
            .set_json(json!({"photo_url": "https://example.com/a.png"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again["photo_url"], "https://example.com/a.png");
    assert_eq!(again["display_name"], "Alice");

    let (s, _, _) = call(&app, authed(TestRequest::delete().uri("/api/v1/me"), ALICE)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, h2, body) = call(&app, authed(TestRequest::get().uri("/api/v1/me"), ALICE)).await;
    assert_problem(s, &h2, &body, StatusCode::NOT_FOUND, "profile_not_found");
    let (s, h2, body) = call(&app, authed(TestRequest::delete().uri("/api/v1/me"), ALICE)).await;
    assert_problem(s, &h2, &body, StatusCode::NOT_FOUND, "profile_not_found");

    let types: Vec<_> = h
        .store
        .events()
        .iter()
        .map(|e| e.event.event_type())
        .collect();
    assert_eq!(
        types,
        ["user.created", "user.profile_updated", "user.deleted"]
    );
}

#[actix_web::test]
async fn requests_without_a_valid_bearer_token_get_401_with_a_challenge() {
    let h = harness();
    let app = app(&h).await;
    for req in [
        TestRequest::get().uri("/api/v1/me"),
        TestRequest::get()
            .uri("/api/v1/me")
            .insert_header((header::AUTHORIZATION, "Bearer ")),
        TestRequest::get()
            .uri("/api/v1/me")
            .insert_header((header::AUTHORIZATION, "Basic YWxpY2U6cHc=")),
        authed(TestRequest::get().uri("/api/v1/me"), "not-a-known-token"),
        authed(TestRequest::get().uri("/api/v1/push-tokens"), "nope"),
    ] {
        let (s, headers, body) = call(&app, req).await;
        assert_problem(s, &headers, &body, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(
            headers.get(header::WWW_AUTHENTICATE).unwrap(),
            "Bearer error=\"invalid_token\""
        );
    }
}

#[actix_web::test]
async fn bad_bodies_get_the_right_4xx_and_lose_nothing() {
    let h = harness();
    let app = app(&h).await;
    let patch = || authed(TestRequest::patch().uri("/api/v1/me"), ALICE);

    let (s, hd, b) = call(
        &app,
        patch()
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .set_payload("{\"display_name\": "),
    )
    .await;
    assert_problem(s, &hd, &b, StatusCode::BAD_REQUEST, "invalid_request_body");
    assert!(
        !b["detail"].as_str().unwrap().contains("display_name"),
        "no parser text echoes input"
    );

    let (s, hd, b) = call(
        &app,
        patch()
            .insert_header((header::CONTENT_TYPE, "text/plain"))
            .set_payload("{}"),
    )
    .await;
    assert_problem(
        s,
        &hd,
        &b,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let (s, hd, b) = call(&app, patch().set_payload("{}")).await;
    assert_problem(
        s,
        &hd,
        &b,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );

    let huge = json!({"display_name": "x".repeat(5000)});
    let (s, hd, b) = call(&app, patch().set_json(huge)).await;
    assert_problem(
        s,
        &hd,
        &b,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );

    let (s, hd, b) = call(&app, patch().set_json(json!({"displayName": "typo"}))).await;
    assert_problem(s, &hd, &b, StatusCode::BAD_REQUEST, "invalid_request_body");
    let (s, hd, b) = call(&app, patch().set_json(json!({"display_name": 42}))).await;
    assert_problem(s, &hd, &b, StatusCode::BAD_REQUEST, "invalid_request_body");
    let (s, hd, b) = call(
        &app,
        patch().insert_header((header::CONTENT_TYPE, "application/json")),
    )
    .await;
    assert_problem(s, &hd, &b, StatusCode::BAD_REQUEST, "invalid_request_body");
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let (s, hd, b) = call(
        &app,
        patch()
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .set_payload(deep),
    )
    .await;
    assert_problem(s, &hd, &b, StatusCode::BAD_REQUEST, "invalid_request_body");
    let (s, hd, b) = call(
        &app,
        patch()
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .set_payload(&b"{\"display_name\": \"\xff\xfe\"}"[..]),
    )
    .await;
    assert_problem(s, &hd, &b, StatusCode::BAD_REQUEST, "invalid_request_body");

    let (s, hd, b) = call(
        &app,
        patch().set_json(json!({"display_name": "   ", "email": "nope", "photo_url": "ftp://x/y"})),
    )
    .await;
    assert_problem(
        s,
        &hd,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let mut pointers: Vec<&str> = b["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    pointers.sort_unstable();
    assert_eq!(pointers, ["/display_name", "/email", "/photo_url"]);

    assert!(
        h.store.events().is_empty(),
        "no bad request created anything"
    );
    let (s, _, _) = call(&app, authed(TestRequest::get().uri("/api/v1/me"), ALICE)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn test_push_reports_each_device_and_prunes_dead_tokens() {
    let h = harness();
    let app = app(&h).await;
    let (s, _, b) = call(
        &app,
        authed(TestRequest::post().uri("/api/v1/me/test-push"), BOB),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b,
        json!({"live": true, "devices": 0, "sent": 0, "skipped": 0, "results": []})
    );

    for (t, platform) in [("phone", "ios"), ("old-tablet", "android"), ("busy", "web")] {
        let (s, _, _) = call(
            &app,
            authed(TestRequest::post().uri("/api/v1/push-tokens"), BOB)
                .set_json(json!({"token": t, "platform": platform})),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
    }
    let old = domain::PushToken::parse("old-tablet").unwrap();
    h.push.script(&old, [PushOutcome::Unregistered]);
    let busy = domain::PushToken::parse("busy").unwrap();
    h.push.script(
        &busy,
        [PushOutcome::Unavailable {
            retry_after: Some(std::time::Duration::from_secs(30)),
        }],
    );
    let (s, _, b) = call(
        &app,
        authed(TestRequest::post().uri("/api/v1/me/test-push"), BOB),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b,
        json!({"live": true, "devices": 3, "sent": 1, "skipped": 0, "results": [
            {"token": "busy", "platform": "web", "outcome": "unavailable", "code": null, "retry_after_secs": 30},
            {"token": "old-tablet", "platform": "android", "outcome": "pruned", "code": "UNREGISTERED", "retry_after_secs": null},
            {"token": "phone", "platform": "ios", "outcome": "sent", "code": null, "retry_after_secs": null},
        ]})
    );
    let sent = h.push.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.title.as_deref(), Some("Test notification"));
    let (_, _, page) = call(
        &app,
        authed(TestRequest::get().uri("/api/v1/push-tokens"), BOB),
    )
    .await;
    let left: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["token"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["phone", "busy"], "the dead token was deleted");

    // Another user's devices are not touched; no token, no test push.
    let (s, _, b) = call(
        &app,
        authed(TestRequest::post().uri("/api/v1/me/test-push"), ALICE),
    )
    .await;
    assert_eq!((s, b["devices"].as_u64()), (StatusCode::OK, Some(0)));
    let (s, hd, b) = call(&app, TestRequest::post().uri("/api/v1/me/test-push")).await;
    assert_problem(s, &hd, &b, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(h.push.attempts(), 3);
}

#[actix_web::test]
async fn push_tokens_register_list_and_unregister() {
    let h = harness();
    let app = app(&h).await;
    for i in 0..5 {
        let (s, _, b) = call(
            &app,
            authed(TestRequest::post().uri("/api/v1/push-tokens"), BOB)
                .set_json(json!({"token": format!("tok-{i}"), "platform": "android"})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["platform"], "android");
    }
    let created = h
        .store
        .events()
        .iter()
        .filter(|e| e.event.event_type() == "user.created")
        .count();
    assert_eq!(created, 1, "the first registration created bob once");

    let (s, _, page1) = call(
        &app,
        authed(TestRequest::get().uri("/api/v1/push-tokens?limit=2"), BOB),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    let cursor = page1["next_cursor"].as_str().unwrap().to_owned();
    let (_, _, page2) = call(
        &app,
        authed(
            TestRequest::get().uri(&format!("/api/v1/push-tokens?limit=100&cursor={cursor}")),
            BOB,
        ),
    )
    .await;
    assert_eq!(page2["items"].as_array().unwrap().len(), 3);
    assert!(page2["next_cursor"].is_null());

    let (_, _, clamped) = call(
        &app,
        authed(TestRequest::get().uri("/api/v1/push-tokens?limit=-5"), BOB),
    )
    .await;
    assert_eq!(clamped["items"].as_array().unwrap().len(), 1);

    let (s, hd, b) = call(
        &app,
        authed(
            TestRequest::get().uri("/api/v1/push-tokens?cursor=garbage"),
            BOB,
        ),
    )
    .await;
    assert_problem(s, &hd, &b, StatusCode::BAD_REQUEST, "invalid_cursor");
    let (s, hd, b) = call(
        &app,
        authed(TestRequest::get().uri("/api/v1/push-tokens?limit=abc"), BOB),
    )
    .await;
    assert_problem(s, &hd, &b, StatusCode::BAD_REQUEST, "bad_request");

    let (s, hd, b) = call(
        &app,
        authed(TestRequest::post().uri("/api/v1/push-tokens"), BOB)
            .set_json(json!({"platform": "windows"})),
    )
    .await;
    assert_problem(
        s,
        &hd,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let mut pointers: Vec<&str> = b["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    pointers.sort_unstable();
    assert_eq!(pointers, ["/platform", "/token"]);

    let (s, _, _) = call(
        &app,
        authed(TestRequest::delete().uri("/api/v1/push-tokens/tok-0"), BOB),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, hd, b) = call(
        &app,
        authed(TestRequest::delete().uri("/api/v1/push-tokens/tok-0"), BOB),
    )
    .await;
    assert_problem(s, &hd, &b, StatusCode::NOT_FOUND, "push_token_not_found");
    let (s, hd, b) = call(
        &app,
        authed(
            TestRequest::delete().uri("/api/v1/push-tokens/tok-1"),
            ALICE,
        ),
    )
    .await;
    assert_problem(s, &hd, &b, StatusCode::NOT_FOUND, "push_token_not_found");
}

#[actix_web::test]
async fn unknown_routes_and_methods_are_problems_too() {
    let h = harness();
    let app = app(&h).await;
    let (s, hd, b) = call(&app, TestRequest::get().uri("/nope")).await;
    assert_problem(s, &hd, &b, StatusCode::NOT_FOUND, "not_found");
    let (s, hd, b) = call(&app, authed(TestRequest::put().uri("/api/v1/me"), ALICE)).await;
    assert_problem(
        s,
        &hd,
        &b,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

#[actix_web::test]
async fn readiness_names_the_dependency_that_is_down() {
    let h = harness();
    let app = app(&h).await;
    let (s, _, b) = call(&app, TestRequest::get().uri("/readyz")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["checks"], json!({"postgres": "ok", "redis": "ok"}));
    h.redis.up.store(false, Ordering::SeqCst);
    let (s, hd, b) = call(&app, TestRequest::get().uri("/readyz")).await;
    assert_problem(s, &hd, &b, StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    assert!(b["detail"].as_str().unwrap().contains("redis"));
    assert_eq!(b["checks"]["redis"], "down");
    assert_eq!(b["checks"]["postgres"], "ok");
    let (s, _, b) = call(&app, TestRequest::get().uri("/healthz")).await;
    assert_eq!((s, b), (StatusCode::OK, json!({"status": "ok"})));
}

#[actix_web::test]
async fn a_draining_instance_is_not_ready_but_still_serves() {
    let h = harness();
    let app = app(&h).await;
    let (s, _, _) = call(&app, TestRequest::get().uri("/readyz")).await;
    assert_eq!(s, StatusCode::OK);
    h.state.ops.draining.store(true, Ordering::SeqCst);
    let (s, hd, b) = call(&app, TestRequest::get().uri("/readyz")).await;
    assert_problem(s, &hd, &b, StatusCode::SERVICE_UNAVAILABLE, "shutting_down");
    assert_eq!(hd.get(header::RETRY_AFTER).unwrap(), "5");
    let (s, _, b) = call(
        &app,
        authed(TestRequest::patch().uri("/api/v1/me"), ALICE).set_json(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, _, _) = call(&app, TestRequest::get().uri("/healthz")).await;
    assert_eq!(s, StatusCode::OK);
}

#[actix_web::test]
async fn readiness_checks_hanging_dependencies_at_once_within_the_timeout() {
    let h = harness();
    h.redis.hangs.store(true, Ordering::SeqCst);
    h.postgres.hangs.store(true, Ordering::SeqCst);
    let app = app(&h).await;
    let started = std::time::Instant::now();
    let (s, hd, b) = call(&app, TestRequest::get().uri("/readyz")).await;
    let took = started.elapsed();
    assert_problem(s, &hd, &b, StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    assert_eq!(b["checks"], json!({"postgres": "down", "redis": "down"}));
    // Each check is cut at 500 ms; one after the other would take 1 s.
    assert!(
        took < std::time::Duration::from_millis(950),
        "answered after {took:?}: the checks did not run concurrently"
    );
}

#[actix_web::test]
async fn every_response_carries_a_request_id_and_security_headers() {
    let h = harness();
    let app = app(&h).await;
    let (_, hd, _) = call(
        &app,
        TestRequest::get()
            .uri("/healthz")
            .insert_header(("x-request-id", "client-id-42")),
    )
    .await;
    assert_eq!(hd.get("x-request-id").unwrap(), "client-id-42");
    let (_, hd, _) = call(
        &app,
        TestRequest::get()
            .uri("/healthz")
            .insert_header(("x-request-id", "bad id\twith tab")),
    )
    .await;
    let generated = hd.get("x-request-id").unwrap().to_str().unwrap();
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
    assert_eq!(hd.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(), "nosniff");
    assert_eq!(hd.get(header::X_FRAME_OPTIONS).unwrap(), "DENY");
    assert!(
        hd.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
        "CORS is off unless configured"
    );
}

/// A user store whose every call fails as if Postgres were down.
struct DownStore;

#[async_trait]
impl ports::UserRepository for DownStore {
    async fn find_by_uid(
        &self,
        _: &FirebaseUid,
    ) -> Result<Option<domain::User>, ports::FindUserError> {
        Err(ports::FindUserError::Unavailable(anyhow::anyhow!(
            "pool timed out at 10.1.2.3"
        )))
    }
    async fn upsert_profile(
        &self,
        _: &FirebaseUid,
        _: &domain::ProfilePatch,
        _: &domain::ProfileDefaults,
    ) -> Result<ports::UpsertedProfile, ports::UpsertProfileError> {
        Err(ports::UpsertProfileError::Unknown(anyhow::anyhow!(
            "relation \"users\" does not exist"
        )))
    }
    async fn delete_by_uid(&self, _: &FirebaseUid) -> Result<domain::User, ports::DeleteUserError> {
        Err(ports::DeleteUserError::Unavailable(anyhow::anyhow!("down")))
    }
}

#[actix_web::test]
async fn infrastructure_failures_are_503_or_500_without_their_cause() {
    let h = harness_with(Arc::new(DownStore), Arc::new(InMemoryStore::new()));
    let app = app(&h).await;
    let (s, hd, b) = call(&app, authed(TestRequest::get().uri("/api/v1/me"), ALICE)).await;
    assert_problem(
        s,
        &hd,
        &b,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    );
    assert_eq!(hd.get(header::RETRY_AFTER).unwrap(), "5");
    assert!(!b.to_string().contains("10.1.2.3"));
    let (s, hd, b) = call(
        &app,
        authed(TestRequest::patch().uri("/api/v1/me"), ALICE).set_json(json!({})),
    )
    .await;
    assert_problem(
        s,
        &hd,
        &b,
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
    );
    assert!(!b.to_string().contains("relation"));
}

#[actix_web::test]
async fn the_spec_and_docs_are_served() {
    let h = harness();
    let app = app(&h).await;
    let (s, _, spec) = call(&app, TestRequest::get().uri("/openapi.json")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(spec, http_api::openapi_spec());
    let res = test::call_service(&app, TestRequest::get().uri("/docs").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let html = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
    assert!(html.contains("swagger-ui") && html.contains("/docs/init.js"));
    let res = test::call_service(&app, TestRequest::get().uri("/metrics").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
    assert!(text.contains("http_requests_total"));
}

#[test]
fn the_checked_in_spec_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi/openapi.json");
    let checked_in: Value = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    assert!(
        checked_in == http_api::openapi_spec(),
        "openapi/openapi.json is stale: regenerate it with `just openapi` (cargo run -p app -- openapi > openapi/openapi.json)"
    );
}

fn limited(h: &mut Harness, cache: Arc<dyn ports::Cache>, per_user: u32, per_ip: u32) {
    h.state.rate_limiter = Some(http_api::RateLimiter::new(
        cache,
        http_api::RateLimitSettings {
            per_user,
            per_ip,
            window: std::time::Duration::from_secs(60),
            trusted_proxies: Vec::new(),
        },
    ));
}

#[actix_web::test]
async fn users_over_their_rate_limit_get_429_with_retry_after() {
    let mut h = harness();
    limited(
        &mut h,
        Arc::new(ports::testing::InMemoryCache::new()),
        3,
        100,
    );
    let app = app(&h).await;
    for _ in 0..3 {
        let (s, _, _) = call(
            &app,
            authed(TestRequest::get().uri("/api/v1/push-tokens"), ALICE),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, hd, b) = call(
        &app,
        authed(TestRequest::get().uri("/api/v1/push-tokens"), ALICE),
    )
    .await;
    assert_problem(s, &hd, &b, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry: u64 = hd
        .get(header::RETRY_AFTER)
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(
        hd.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(),
        "nosniff",
        "429s carry the security headers"
    );
    let (s, _, _) = call(
        &app,
        authed(TestRequest::get().uri("/api/v1/push-tokens"), BOB),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "limits are per user");
}

#[actix_web::test]
async fn unauthenticated_requests_are_limited_per_ip_but_probes_never() {
    let mut h = harness();
    limited(
        &mut h,
        Arc::new(ports::testing::InMemoryCache::new()),
        100,
        2,
    );
    let app = app(&h).await;
    let peer = "203.0.113.9:5000".parse::<std::net::SocketAddr>().unwrap();
    for _ in 0..2 {
        let (s, _, _) = call(
            &app,
            TestRequest::get().uri("/openapi.json").peer_addr(peer),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, hd, b) = call(
        &app,
        TestRequest::get().uri("/openapi.json").peer_addr(peer),
    )
    .await;
    assert_problem(s, &hd, &b, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let (s, hd, b) = call(
        &app,
        authed(TestRequest::get().uri("/api/v1/me"), "forged").peer_addr(peer),
    )
    .await;
    assert_problem(s, &hd, &b, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    for _ in 0..5 {
        let (s, _, _) = call(&app, TestRequest::get().uri("/healthz").peer_addr(peer)).await;
        assert_eq!(s, StatusCode::OK);
    }
    let other = "198.51.100.7:5000".parse::<std::net::SocketAddr>().unwrap();
    let (s, _, _) = call(
        &app,
        TestRequest::get().uri("/openapi.json").peer_addr(other),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "limits are per IP");
}

#[actix_web::test]
async fn configured_cors_origins_are_served_and_others_get_no_cors_headers() {
    let mut h = harness();
    h.state.settings.cors_origins = vec!["https://app.example.com".into()];
    let app = app(&h).await;
    let (s, hd, _) = call(
        &app,
        TestRequest::default()
            .method(actix_web::http::Method::OPTIONS)
            .uri("/api/v1/me")
            .insert_header((header::ORIGIN, "https://app.example.com"))
            .insert_header((header::ACCESS_CONTROL_REQUEST_METHOD, "PATCH"))
            .insert_header((
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization, content-type",
            )),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "the preflight is answered");
    assert_eq!(
        hd.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(),
        "https://app.example.com"
    );
    let (s, hd, _) = call(
        &app,
        authed(TestRequest::get().uri("/api/v1/push-tokens"), ALICE)
            .insert_header((header::ORIGIN, "https://app.example.com")),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        hd.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(),
        "https://app.example.com"
    );
    // Another origin gets no CORS headers: its browser withholds the answer.
    let (s, hd, _) = call(
        &app,
        authed(TestRequest::get().uri("/api/v1/push-tokens"), ALICE)
            .insert_header((header::ORIGIN, "https://evil.example")),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(hd.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    assert_eq!(hd.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(), "nosniff");
    let (_, hd, _) = call(
        &app,
        TestRequest::default()
            .method(actix_web::http::Method::OPTIONS)
            .uri("/api/v1/me")
            .insert_header((header::ORIGIN, "https://evil.example"))
            .insert_header((header::ACCESS_CONTROL_REQUEST_METHOD, "PATCH")),
    )
    .await;
    assert!(
        hd.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
        "no preflight pass for it"
    );
}

#[actix_web::test]
async fn a_junk_authorization_header_buys_no_way_around_the_ip_limit() {
    let mut h = harness();
    limited(
        &mut h,
        Arc::new(ports::testing::InMemoryCache::new()),
        100,
        3,
    );
    let app = app(&h).await;
    let peer = "203.0.113.10:5000".parse::<std::net::SocketAddr>().unwrap();
    let junk = |uri: &str, value: &str| {
        TestRequest::get()
            .uri(uri)
            .peer_addr(peer)
            .insert_header((header::AUTHORIZATION, value.to_owned()))
    };
    // Alice proves her token before the flood.
    let (s, _, _) = call(
        &app,
        authed(TestRequest::get().uri("/api/v1/push-tokens"), ALICE).peer_addr(peer),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // A route without auth, and malformed credentials on one with it: each
    // counts against the IP.
    let (s, _, _) = call(&app, junk("/openapi.json", "Basic eA==")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = call(&app, junk("/openapi.json", "Bearer whatever")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = call(&app, junk("/api/v1/me", "Basic eA==")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, hd, b) = call(&app, junk("/openapi.json", "Basic eA==")).await;
    assert_problem(s, &hd, &b, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let (s, hd, b) = call(&app, junk("/api/v1/me", "Bearer forged")).await;
    assert_problem(s, &hd, &b, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // A user whose token was proven before is limited per user, not per IP
    // (a token never seen before would now cost a signature check: 429).
    let (s, _, _) = call(
        &app,
        authed(TestRequest::get().uri("/api/v1/push-tokens"), ALICE).peer_addr(peer),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

#[actix_web::test]
async fn junk_credentials_on_an_unknown_path_or_a_wrong_method_still_count_per_ip() {
    let mut h = harness();
    limited(
        &mut h,
        Arc::new(ports::testing::InMemoryCache::new()),
        100,
        2,
    );
    let app = app(&h).await;
    let peer = "203.0.113.11:5000".parse::<std::net::SocketAddr>().unwrap();
    let junk = |req: TestRequest| {
        req.peer_addr(peer)
            .insert_header((header::AUTHORIZATION, "Bearer junk"))
    };
    let (s, _, _) = call(&app, junk(TestRequest::get().uri("/api/v1/no-such-route"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = call(&app, junk(TestRequest::post().uri("/api/v1/me"))).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    let (s, hd, b) = call(&app, junk(TestRequest::get().uri("/api/v1/no-such-route"))).await;
    assert_problem(s, &hd, &b, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let (s, hd, b) = call(&app, junk(TestRequest::put().uri("/api/v1/me"))).await;
    assert_problem(s, &hd, &b, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
}

#[actix_web::test]
async fn an_ip_over_its_failure_budget_costs_no_more_signature_checks() {
    let mut h = harness();
    limited(
        &mut h,
        Arc::new(ports::testing::InMemoryCache::new()),
        100,
        3,
    );
    let verifier = Arc::new(FakeTokenVerifier::new());
    verifier.allow_uid(ALICE, "alice");
    h.state.verifier = verifier.clone();
    let app = app(&h).await;
    let peer = "203.0.113.12:5000".parse::<std::net::SocketAddr>().unwrap();
    // Alice proves her token once, before the flood.
    let (s, _, _) = call(
        &app,
        authed(TestRequest::get().uri("/api/v1/push-tokens"), ALICE).peer_addr(peer),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(verifier.verifications(), 1);
    for i in 0..3 {
        let (s, _, _) = call(
            &app,
            authed(TestRequest::get().uri("/api/v1/me"), &format!("forged-{i}")).peer_addr(peer),
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(verifier.verifications(), 4);
    for i in 0..20 {
        let (s, hd, b) = call(
            &app,
            authed(TestRequest::get().uri("/api/v1/me"), &format!("flood-{i}")).peer_addr(peer),
        )
        .await;
        assert_problem(s, &hd, &b, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    }
    assert_eq!(
        verifier.verifications(),
        4,
        "refused before any verification once over the budget"
    );
    let (s, _, _) = call(
        &app,
        authed(TestRequest::get().uri("/api/v1/push-tokens"), ALICE).peer_addr(peer),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::OK,
        "a token proven before still works from that IP"
    );
}

/// A cache that is always down.
struct DownCache;

#[async_trait]
impl ports::Cache for DownCache {
    async fn get(&self, _: &str) -> Result<Option<Vec<u8>>, ports::CacheError> {
        Err(ports::CacheError::Unavailable(anyhow::anyhow!("down")))
    }
    async fn set(
        &self,
        _: &str,
        _: &[u8],
        _: std::time::Duration,
    ) -> Result<(), ports::CacheError> {
        Err(ports::CacheError::Unavailable(anyhow::anyhow!("down")))
    }
    async fn delete(&self, _: &str) -> Result<(), ports::CacheError> {
        Err(ports::CacheError::Unavailable(anyhow::anyhow!("down")))
    }
    async fn incr_window(
        &self,
        _: &str,
        _: std::time::Duration,
    ) -> Result<(u64, std::time::Duration), ports::CacheError> {
        Err(ports::CacheError::Unavailable(anyhow::anyhow!("down")))
    }
}

#[actix_web::test]
async fn a_limiter_that_cannot_reach_its_store_lets_requests_through() {
    let mut h = harness();
    limited(&mut h, Arc::new(DownCache), 1, 1);
    let app = app(&h).await;
    for _ in 0..3 {
        let (s, _, _) = call(
            &app,
            authed(TestRequest::get().uri("/api/v1/push-tokens"), ALICE),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
    }
}

//! What every API test shares: the app over the `ports_testing` fakes,
//! and requests and checks in one line each.

pub(crate) use actix_web::body::MessageBody;
pub(crate) use actix_web::dev::{Service, ServiceResponse};
pub(crate) use actix_web::http::{StatusCode, header};
pub(crate) use actix_web::test::{self, TestRequest};
pub(crate) use async_trait::async_trait;
pub(crate) use domain::{CursorCodec, FirebaseUid, VerifiedIdentity};
pub(crate) use http_api::{ApiState, HttpSettings, OpsState, Readiness, build_app, openapi_bytes};
pub(crate) use ports::{HealthProbe, ProbeError};
pub(crate) use ports_testing::{
    FakeTokenVerifier, InMemoryStore, PushOutcome, RecordingJobQueue, RecordingPushSender,
};
pub(crate) use serde_json::{Value, json};
pub(crate) use std::sync::Arc;
pub(crate) use std::sync::atomic::{AtomicBool, Ordering};
pub(crate) use usecases::{ProfileService, PushNotifications, PushTokenService};

pub(crate) const ALICE: &str = "token-alice";

pub(crate) const BOB: &str = "token-bob";

pub(crate) struct Probe {
    pub(crate) name: &'static str,
    pub(crate) up: AtomicBool,
    /// Never answers (a dependency that accepts connections and hangs).
    pub(crate) hangs: AtomicBool,
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

pub(crate) struct Harness {
    pub(crate) store: Arc<InMemoryStore>,
    pub(crate) redis: Arc<Probe>,
    pub(crate) postgres: Arc<Probe>,
    pub(crate) push: Arc<RecordingPushSender>,
    pub(crate) objects: Arc<ports_testing::InMemoryObjectStore>,
    pub(crate) verifier: Arc<FakeTokenVerifier>,
    pub(crate) state: ApiState,
}

pub(crate) fn harness_with(
    users: Arc<dyn ports::UserRepository>,
    store: Arc<InMemoryStore>,
) -> Harness {
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
    let objects = Arc::new(ports_testing::InMemoryObjectStore::new());
    let uploads = usecases::UploadService::new(
        store.clone(),
        objects.clone(),
        ProfileService::new(users.clone()),
        usecases::UploadSettings::default(),
    );
    let state = ApiState {
        data: usecases::UserData::new(
            users.clone(),
            store.clone(),
            Arc::new(ports_testing::InMemoryWelcomeLedger::new()),
            uploads.clone(),
            Arc::new(RecordingJobQueue::new()),
        ),
        uploads,
        profiles: ProfileService::new(users),
        push_tokens: PushTokenService::new(store.clone(), CursorCodec::new(b"test".to_vec())),
        push: PushNotifications::new(
            store.clone(),
            push.clone(),
            Arc::new(RecordingJobQueue::new()),
        ),
        verifier: verifier.clone(),
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
        objects,
        verifier,
        state,
    }
}

pub(crate) fn harness() -> Harness {
    let store = Arc::new(InMemoryStore::new());
    harness_with(store.clone(), store)
}

pub(crate) async fn app(
    h: &Harness,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    test::init_service(build_app(h.state.clone(), openapi_bytes(), |_| {})).await
}

pub(crate) async fn call<S, B>(app: &S, req: TestRequest) -> (StatusCode, header::HeaderMap, Value)
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

pub(crate) fn authed(req: TestRequest, token: &str) -> TestRequest {
    req.insert_header((header::AUTHORIZATION, format!("Bearer {token}")))
}

pub(crate) fn assert_problem(
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

pub(crate) fn limited(h: &mut Harness, cache: Arc<dyn ports::Cache>, per_user: u32, per_ip: u32) {
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

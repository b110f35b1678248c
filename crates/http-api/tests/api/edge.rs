//! What every route shares: problems for unknown routes and failures,
//! request ids, security headers, CORS.

use crate::helpers::*;

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
    async fn events_about(
        &self,
        _: &FirebaseUid,
        _: u32,
    ) -> Result<Vec<ports::StoredEvent>, ports::FindUserError> {
        Ok(Vec::new())
    }
    async fn verified_email(
        &self,
        _: &FirebaseUid,
    ) -> Result<Option<domain::Email>, ports::FindUserError> {
        Ok(None)
    }
    async fn deleted_at(
        &self,
        _: &FirebaseUid,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, ports::FindUserError> {
        Ok(None)
    }
    async fn forget_deletions(&self, _: std::time::Duration) -> Result<u64, ports::FindUserError> {
        Err(ports::FindUserError::Unavailable(anyhow::anyhow!("down")))
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

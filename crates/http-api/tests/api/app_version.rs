//! The minimum app version: 426 `upgrade_required` for apps older than
//! their platform's minimum, on the API only.

use crate::helpers::*;

fn gated_harness(require: bool) -> Harness {
    let mut h = harness();
    h.state.settings.app_versions = Arc::new(domain::AppVersionPolicy {
        min_ios: Some("2.0.0".parse().unwrap()),
        store_url_ios: Some("https://apps.apple.com/app/id123".into()),
        require,
        ..domain::AppVersionPolicy::default()
    });
    h
}

fn from_app(req: TestRequest, platform: &str, version: &str) -> TestRequest {
    req.insert_header(("X-App-Platform", platform))
        .insert_header(("X-App-Version", version))
}

#[actix_web::test]
async fn an_app_older_than_its_minimum_is_told_to_upgrade() {
    let h = gated_harness(false);
    let app = app(&h).await;
    let me = || authed(TestRequest::get().uri("/api/v1/me"), ALICE);
    let (s, headers, body) = call(&app, from_app(me(), "ios", "1.9.3")).await;
    assert_problem(
        s,
        &headers,
        &body,
        StatusCode::UPGRADE_REQUIRED,
        "upgrade_required",
    );
    assert_eq!(body["min_version"], "2.0.0");
    assert_eq!(body["store_url"], "https://apps.apple.com/app/id123");

    // The minimum itself, another platform, or no headers at all: served.
    for req in [
        from_app(me(), "ios", "2.0.0"),
        from_app(me(), "android", "0.1.0"),
        me(),
    ] {
        let (s, _, body) = call(&app, req).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "served (no profile yet): {body}");
    }
    let (s, headers, body) = call(&app, from_app(me(), "ios", "latest")).await;
    assert_problem(
        s,
        &headers,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_app_version",
    );
    // Probes and docs are never gated.
    let (s, _, _) = call(
        &app,
        from_app(TestRequest::get().uri("/healthz"), "ios", "1.0.0"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

#[actix_web::test]
async fn with_require_an_app_that_does_not_say_its_version_is_refused() {
    let h = gated_harness(true);
    let app = app(&h).await;
    let (s, headers, body) = call(&app, authed(TestRequest::get().uri("/api/v1/me"), ALICE)).await;
    assert_problem(
        s,
        &headers,
        &body,
        StatusCode::UPGRADE_REQUIRED,
        "upgrade_required",
    );
    let (s, _, _) = call(
        &app,
        from_app(
            authed(TestRequest::get().uri("/api/v1/me"), ALICE),
            "web",
            "1.0.0",
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

//! `/readyz`: dependencies down, hanging, and a draining instance.

use crate::helpers::*;

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

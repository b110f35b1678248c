//! The OpenAPI document and the docs page.

use crate::helpers::*;

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

/// Everything the docs page loads comes from the app (it works offline and
/// within its CSP).
#[actix_web::test]
async fn the_docs_page_loads_only_from_the_app() {
    let h = harness();
    let app = app(&h).await;
    let res = test::call_service(&app, TestRequest::get().uri("/docs").to_request()).await;
    let csp = res
        .headers()
        .get(header::CONTENT_SECURITY_POLICY)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!csp.contains("http"), "no other origin in the CSP: {csp}");
    let html = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
    let refs: Vec<&str> = html
        .split(['"', '\''])
        .filter(|s| s.starts_with('/') || s.starts_with("http") || s.starts_with("//"))
        .collect();
    assert!(refs.len() >= 4, "{refs:?}");
    for r in refs {
        assert!(
            r.starts_with('/') && !r.starts_with("//"),
            "{r} is another origin"
        );
        let res = test::call_service(&app, TestRequest::get().uri(r).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK, "{r}");
        assert!(!test::read_body(res).await.is_empty(), "{r}");
    }
    let res = test::call_service(
        &app,
        TestRequest::get()
            .uri("/docs/assets/4.0.0/swagger-ui.css")
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND, "one version only");
}

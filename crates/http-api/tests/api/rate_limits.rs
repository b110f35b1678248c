//! Rate limits per user and per IP, and what gets around them (nothing).

use crate::helpers::*;

#[actix_web::test]
async fn users_over_their_rate_limit_get_429_with_retry_after() {
    let mut h = harness();
    limited(
        &mut h,
        Arc::new(ports_testing::InMemoryCache::new()),
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
        Arc::new(ports_testing::InMemoryCache::new()),
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
async fn a_junk_authorization_header_buys_no_way_around_the_ip_limit() {
    let mut h = harness();
    limited(
        &mut h,
        Arc::new(ports_testing::InMemoryCache::new()),
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
        Arc::new(ports_testing::InMemoryCache::new()),
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
        Arc::new(ports_testing::InMemoryCache::new()),
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

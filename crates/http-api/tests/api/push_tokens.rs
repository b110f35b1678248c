//! `/api/v1/push-tokens` and `/api/v1/me/test-push`.

use crate::helpers::*;

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
async fn the_token_in_the_path_route_is_deprecated_and_its_successor_takes_the_token_in_the_body() {
    let h = harness();
    let app = app(&h).await;
    for token in ["device-one", "device-two"] {
        let (s, _, _) = call(
            &app,
            authed(TestRequest::post().uri("/api/v1/push-tokens"), ALICE)
                .set_json(json!({"token": token, "platform": "ios"})),
        )
        .await;
        assert!(s.is_success(), "{token}: {s}");
    }
    let (s, headers, _) = call(
        &app,
        authed(
            TestRequest::delete().uri("/api/v1/push-tokens/device-one"),
            ALICE,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        headers.get("deprecation").unwrap(),
        "@1796515200",
        "2026-12-06"
    );
    assert_eq!(
        headers.get("sunset").unwrap(),
        "Wed, 30 Jun 2027 00:00:00 GMT"
    );
    assert_eq!(
        headers.get("link").unwrap(),
        "</api/v1/push-tokens/unregister>; rel=\"successor-version\""
    );

    let unregister = |token: &str| {
        authed(
            TestRequest::post().uri("/api/v1/push-tokens/unregister"),
            ALICE,
        )
        .set_json(json!({ "token": token }))
    };
    let (s, headers, _) = call(&app, unregister("device-two")).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(!headers.contains_key("deprecation"));
    let (s, h2, body) = call(&app, unregister("device-two")).await;
    assert_problem(s, &h2, &body, StatusCode::NOT_FOUND, "push_token_not_found");
    let (s, h2, body) = call(&app, unregister("")).await;
    assert_problem(
        s,
        &h2,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );

    let spec = http_api::openapi_spec();
    assert_eq!(
        spec["paths"]["/api/v1/push-tokens/{token}"]["delete"]["deprecated"],
        true
    );
    assert!(spec["paths"]["/api/v1/push-tokens/unregister"]["post"]["deprecated"].is_null());
}

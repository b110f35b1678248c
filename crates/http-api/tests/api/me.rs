//! `/api/v1/me`: the profile, and the bodies and tokens it refuses.

use crate::helpers::*;
use ports::UserRepository as _;

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
    assert_eq!(s, StatusCode::ACCEPTED);
    // The token was issued before the deletion: it proves nothing now.
    let (s, h2, body) = call(&app, authed(TestRequest::get().uri("/api/v1/me"), ALICE)).await;
    assert_problem(s, &h2, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (s, h2, body) = call(&app, authed(TestRequest::delete().uri("/api/v1/me"), ALICE)).await;
    assert_problem(s, &h2, &body, StatusCode::UNAUTHORIZED, "unauthorized");

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
async fn an_export_holds_everything_stored_and_no_push_token_in_the_clear() {
    let h = harness();
    let app = app(&h).await;
    let (s, hd, b) = call(
        &app,
        authed(TestRequest::get().uri("/api/v1/me/export"), BOB),
    )
    .await;
    assert_problem(s, &hd, &b, StatusCode::NOT_FOUND, "profile_not_found");
    let (s, _, _) = call(&app, TestRequest::get().uri("/api/v1/me/export")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    for (t, platform) in [("bob-phone-token", "ios"), ("bob-web-token", "web")] {
        let (s, _, _) = call(
            &app,
            authed(TestRequest::post().uri("/api/v1/push-tokens"), BOB)
                .set_json(json!({"token": t, "platform": platform})),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, _, b) = call(
        &app,
        authed(TestRequest::get().uri("/api/v1/me/export"), BOB),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["profile"]["uid"], "bob");
    let mut devices: Vec<(String, String)> = b["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["platform"].as_str().unwrap().to_owned(),
                d["fingerprint"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    devices.sort();
    let fingerprint = |t: &str| domain::PushToken::parse(t).unwrap().fingerprint();
    assert_eq!(
        devices,
        [
            ("ios".to_owned(), fingerprint("bob-phone-token")),
            ("web".to_owned(), fingerprint("bob-web-token")),
        ]
    );
    assert!(
        !b.to_string().contains("bob-phone-token"),
        "a push token in the clear: {b}"
    );
    assert_eq!(b["welcome_mail"], Value::Null);
    assert!(b["exported_at"].is_string());
}

#[actix_web::test]
async fn a_token_issued_before_the_deletion_cannot_bring_the_account_back() {
    let h = harness();
    let app = app(&h).await;
    let (s, _, _) = call(
        &app,
        authed(TestRequest::patch().uri("/api/v1/me"), ALICE).set_json(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _, _) = call(&app, authed(TestRequest::delete().uri("/api/v1/me"), ALICE)).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    // What an app does on its next launch, with the ID token it still holds.
    for req in [
        authed(TestRequest::post().uri("/api/v1/push-tokens"), ALICE)
            .set_json(json!({"token": "fcm-after-deletion", "platform": "ios"})),
        authed(TestRequest::patch().uri("/api/v1/me"), ALICE).set_json(json!({})),
        authed(TestRequest::post().uri("/api/v1/uploads"), ALICE)
            .set_json(json!({"purpose": "avatar", "content_type": "image/png", "size": 10})),
    ] {
        let (s, h2, body) = call(&app, req).await;
        assert_problem(s, &h2, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let uid = FirebaseUid::parse("alice").unwrap();
    assert!(h.store.find_by_uid(&uid).await.unwrap().is_none());
    let types: Vec<_> = h
        .store
        .events()
        .iter()
        .map(|e| e.event.event_type())
        .collect();
    assert_eq!(types, ["user.created", "user.deleted"], "nothing came back");

    // A genuinely new sign-in (a token issued after the deletion) works.
    let deleted = h.store.deleted_at(&uid).await.unwrap().unwrap();
    let mut fresh = VerifiedIdentity::new(uid.clone());
    fresh.issued_at = Some(deleted + chrono::Duration::seconds(1));
    h.verifier.allow("token-alice-new", fresh);
    let (s, _, body) = call(
        &app,
        authed(TestRequest::patch().uri("/api/v1/me"), "token-alice-new").set_json(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
}

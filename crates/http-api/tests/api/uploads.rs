//! `/api/v1/uploads` and `/media/{id}` over the fakes: presign, upload
//! through the form, complete, read; the refusals.

use crate::helpers::*;
use ports::PresignedPost;
use ports_testing::ObjectClient as _;

fn form_of(body: &Value) -> PresignedPost {
    PresignedPost {
        url: body["url"].as_str().unwrap().to_owned(),
        fields: serde_json::from_value(body["fields"].clone()).unwrap(),
        expires_at: serde_json::from_value(body["expires_at"].clone()).unwrap(),
    }
}

#[actix_web::test]
async fn an_avatar_is_presigned_uploaded_completed_and_becomes_the_photo() {
    let h = harness();
    let app = app(&h).await;
    let (s, _, created) = call(
        &app,
        authed(TestRequest::post().uri("/api/v1/uploads"), ALICE).set_json(json!({
            "purpose": "avatar", "content_type": "image/png", "size": 4
        })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["method"], "POST");
    assert_eq!(created["fields"]["Content-Type"], "image/png");
    let id = created["id"].as_str().unwrap().to_owned();

    let complete = format!("/api/v1/uploads/{id}/complete");
    let (s, h2, body) = call(&app, authed(TestRequest::post().uri(&complete), ALICE)).await;
    assert_problem(s, &h2, &body, StatusCode::CONFLICT, "upload_not_received");

    assert_eq!(
        h.objects
            .post_form(&form_of(&created), vec![1, 2, 3, 4])
            .await,
        204
    );
    let (s, h2, body) = call(&app, authed(TestRequest::post().uri(&complete), BOB)).await;
    assert_problem(s, &h2, &body, StatusCode::NOT_FOUND, "upload_not_found");
    let (s, _, done) = call(
        &app,
        authed(TestRequest::post().uri(&complete), ALICE)
            .insert_header((header::HOST, "api.example.com")),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{done}");
    assert_eq!(done["upload"]["status"], "completed");
    assert_eq!(done["upload"]["size"], 4);
    let photo = done["profile"]["photo_url"].as_str().unwrap();
    assert_eq!(photo, format!("http://api.example.com/media/{id}"));

    let res = test::call_service(
        &app,
        TestRequest::get().uri(&format!("/media/{id}")).to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::FOUND, "no token needed");
    let location = res
        .headers()
        .get(header::LOCATION)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(h.objects.get(&location).await, Some(vec![1, 2, 3, 4]));
    let res = test::call_service(
        &app,
        TestRequest::get()
            .uri(&format!("/media/{}", uuid::Uuid::new_v4()))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    let (s, _, list) = call(
        &app,
        authed(TestRequest::get().uri("/api/v1/uploads"), ALICE),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["items"][0]["id"], id.as_str());
    let (_, _, export) = call(
        &app,
        authed(TestRequest::get().uri("/api/v1/me/export"), ALICE),
    )
    .await;
    assert_eq!(export["uploads"][0]["id"], id.as_str());
    assert!(export["uploads"][0]["url"].is_string());
    let (_, _, theirs) = call(&app, authed(TestRequest::get().uri("/api/v1/uploads"), BOB)).await;
    assert_eq!(theirs["items"], json!([]));
}

#[actix_web::test]
async fn refusals_name_the_field_or_the_limit() {
    let h = harness();
    let app = app(&h).await;
    let post =
        |body: Value| authed(TestRequest::post().uri("/api/v1/uploads"), ALICE).set_json(body);
    for (body, pointer) in [
        (
            json!({"purpose": "banner", "content_type": "image/png", "size": 1}),
            "/purpose",
        ),
        (
            json!({"purpose": "avatar", "content_type": "text/html", "size": 1}),
            "/content_type",
        ),
        (
            json!({"purpose": "avatar", "content_type": "image/png", "size": 6_000_000}),
            "/size",
        ),
        (
            json!({"purpose": "avatar", "content_type": "image/png", "size": 0}),
            "/size",
        ),
        (
            json!({"purpose": "avatar", "content_type": "image/png"}),
            "/size",
        ),
    ] {
        let (s, h2, problem) = call(&app, post(body.clone())).await;
        assert_problem(
            s,
            &h2,
            &problem,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
        assert_eq!(problem["errors"][0]["pointer"], pointer, "{body}");
    }
    for _ in 0..usecases::UploadSettings::default().max_pending {
        let (s, _, _) = call(
            &app,
            post(json!({"purpose": "attachment", "content_type": "application/pdf", "size": 10})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (s, h2, problem) = call(
        &app,
        post(json!({"purpose": "attachment", "content_type": "application/pdf", "size": 10})),
    )
    .await;
    assert_problem(
        s,
        &h2,
        &problem,
        StatusCode::CONFLICT,
        "too_many_pending_uploads",
    );
    let (s, h2, problem) = call(
        &app,
        authed(
            TestRequest::post().uri("/api/v1/uploads/not-a-uuid/complete"),
            ALICE,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{h2:?} {problem}");
}

//! Uploads end to end: the whole app, a real HTTP client posting the
//! presigned form, against the local store the app serves and against a
//! real S3-compatible server (MiniStack) that checks signatures and
//! enforces the policy.

#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{HttpObjectClient, S3Server, TestApp, spawn_app, spawn_app_with};

async fn post(app: &TestApp, token: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = app.client.post(app.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Presign, refused uploads, upload, complete, fetch through the avatar's
/// lasting link and through the export.
async fn walk_through(app: &TestApp) {
    let token = app.token_with("uploader", Some("up@example.com"), Some("Up"));
    let client = HttpObjectClient::new();
    let (s, created) = post(
        app,
        &token,
        "/api/v1/uploads",
        Some(json!({"purpose": "avatar", "content_type": "image/png", "size": 2000})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let form = HttpObjectClient::form_of(&created).unwrap();
    let complete = format!("/api/v1/uploads/{id}/complete");

    let (s, problem) = post(app, &token, &complete, None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(problem["code"], "upload_not_received");

    let over = usize::try_from(domain::UploadPurpose::Avatar.limits().max_bytes).unwrap() + 1;
    let (s, body) = client.post(&form, vec![0; over]).await;
    assert!(
        s.to_string().starts_with('4'),
        "oversize refused by the store: {s} {body}"
    );
    let mut other_type = form.clone();
    other_type
        .fields
        .insert("Content-Type".into(), "text/html".into());
    let (s, body) = client.post(&other_type, b"<script>".to_vec()).await;
    assert!(
        s.to_string().starts_with('4'),
        "wrong type refused by the store: {s} {body}"
    );
    let (s, _) = post(app, &token, &complete, None).await;
    assert_eq!(s, StatusCode::CONFLICT, "nothing arrived");

    let picture: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
    let (s, body) = client.post(&form, picture.clone()).await;
    assert!(s.to_string().starts_with('2'), "stored: {s} {body}");
    let (s, done) = post(app, &token, &complete, None).await;
    assert_eq!(s, StatusCode::OK, "{done}");
    assert_eq!(done["upload"]["size"], 2000);
    let photo = done["profile"]["photo_url"].as_str().unwrap().to_owned();
    assert!(photo.ends_with(&format!("/media/{id}")), "{photo}");

    // The lasting link redirects to a fresh signed one; no token needed.
    let fetched = reqwest::get(&photo).await.unwrap();
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(fetched.bytes().await.unwrap().to_vec(), picture);

    let export: Value = app
        .client
        .get(app.url("/api/v1/me/export"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(export["uploads"][0]["id"], id.as_str());
    let link = export["uploads"][0]["url"].as_str().unwrap();
    let fetched = reqwest::get(link).await.unwrap();
    assert_eq!(fetched.bytes().await.unwrap().to_vec(), picture);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_work_end_to_end_on_the_local_store() {
    let app = spawn_app().await;
    walk_through(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_work_end_to_end_on_an_s3_compatible_store() {
    let s3 = S3Server::start();
    let endpoint = s3.endpoint();
    let app = spawn_app_with(
        app::Role::All,
        &[
            ("STORAGE_BUCKET", s3.bucket.as_str()),
            ("STORAGE_ENDPOINT", endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", s3.access_key_id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", s3.secret_access_key.as_str()),
        ],
    )
    .await;
    walk_through(&app).await;
}

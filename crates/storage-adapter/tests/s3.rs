//! `S3Store` against a real S3-compatible server process (MiniStack), which
//! checks SigV4 signatures and enforces POST policies.

#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use ports::{ObjectStore as _, PostPolicy};
use ports_testing::contract::storage::StoreUnderTest;
use secrecy::SecretString;
use std::sync::Arc;
use std::time::Duration;
use storage_adapter::{S3Store, StorageSettings};
use test_support::{HttpObjectClient, S3Server};

fn settings(server: &S3Server) -> StorageSettings {
    StorageSettings {
        bucket: Some(server.bucket.clone()),
        endpoint: Some(server.endpoint()),
        access_key_id: Some(server.access_key_id.clone()),
        secret_access_key: Some(SecretString::from(server.secret_access_key.clone())),
        ..StorageSettings::new()
    }
}

fn store(server: &S3Server) -> S3Store {
    S3Store::new(&settings(server), &server.bucket).unwrap()
}

ports_testing::object_store_contract!(async {
    let server = S3Server::start();
    StoreUnderTest {
        store: Arc::new(store(&server)),
        client: Arc::new(HttpObjectClient::new()),
        prefix: "t/".into(),
        guard: Box::new(server),
    }
});

fn avatar_policy(key: &str) -> PostPolicy {
    PostPolicy {
        key: key.into(),
        content_type: "image/png".into(),
        min_bytes: 1,
        max_bytes: 1000,
        expires_in: Duration::from_secs(300),
    }
}

#[tokio::test]
async fn forged_signatures_and_keys_are_refused_by_the_store() {
    let server = S3Server::start();
    let s3 = store(&server);
    let client = HttpObjectClient::new();
    let form = s3.presign_post(&avatar_policy("users/1/a")).unwrap();

    let mut forged = form.clone();
    let sig = forged.fields.get_mut("x-amz-signature").unwrap();
    // Its last hex digit changed: the same length, another signature.
    let last = if sig.ends_with('0') { "1" } else { "0" };
    *sig = format!("{}{last}", &sig[..sig.len() - 1]);
    assert_ne!(forged.fields, form.fields);
    let (status, body) = client.post(&forged, vec![1; 10]).await;
    assert_eq!(status, 403, "a forged signature: {body}");

    let wrong_secret = S3Store::new(
        &StorageSettings {
            secret_access_key: Some(SecretString::from("not-the-secret".to_owned())),
            ..settings(&server)
        },
        &server.bucket,
    )
    .unwrap();
    let (status, body) = client
        .post(
            &wrong_secret
                .presign_post(&avatar_policy("users/1/a"))
                .unwrap(),
            vec![1; 10],
        )
        .await;
    assert_eq!(status, 403, "signed with the wrong secret: {body}");
    assert!(
        wrong_secret.head("users/1/a").await.is_err(),
        "the server's own calls are signed too"
    );
    assert_eq!(s3.head("users/1/a").await.unwrap(), None);

    let (status, _) = client.post(&form, vec![1; 10]).await;
    assert!((200..300).contains(&status));
    let url = s3.read_url("users/1/a", Duration::from_secs(60)).unwrap();
    use ports_testing::ObjectClient as _;
    assert_eq!(client.get(&url).await, Some(vec![1; 10]));
    let tampered = url.replace("users/1/a", "users/1/b");
    assert_eq!(client.get(&tampered).await, None, "a link reads one key");
}

#[tokio::test]
async fn a_public_base_url_gives_plain_links_and_a_dead_store_is_unavailable() {
    let server = S3Server::start();
    let cdn = S3Store::new(
        &StorageSettings {
            public_base_url: Some("https://cdn.example.com/".into()),
            ..settings(&server)
        },
        &server.bucket,
    )
    .unwrap();
    assert_eq!(
        cdn.read_url("users/1/a b", Duration::from_secs(60))
            .unwrap(),
        "https://cdn.example.com/users/1/a%20b"
    );
    let dead = S3Store::new(
        &StorageSettings {
            endpoint: Some(format!("http://127.0.0.1:{}", test_support::free_port())),
            timeout: Duration::from_secs(2),
            ..settings(&server)
        },
        &server.bucket,
    )
    .unwrap();
    assert!(matches!(
        dead.head("users/1/a").await,
        Err(ports::StorageError::Unavailable(_))
    ));
    assert!(matches!(
        dead.delete_prefix("users/1/").await,
        Err(ports::StorageError::Unavailable(_))
    ));
}

#[test]
fn a_bucket_without_credentials_is_refused_at_startup() {
    let err = S3Store::new(&StorageSettings::new(), "b").unwrap_err();
    assert!(err.to_string().contains("AWS_ACCESS_KEY_ID"), "{err}");
}

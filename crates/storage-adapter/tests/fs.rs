//! `FsStore` served by a real actix-web server, through the same presigned
//! flow as S3: the contract suite over real HTTP, and forged forms and
//! links refused.

#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use ports::{ObjectStore as _, PostPolicy};
use ports_testing::ObjectClient as _;
use ports_testing::contract::storage::StoreUnderTest;
use std::sync::Arc;
use std::time::Duration;
use storage_adapter::{FsStore, configure_fs_routes};
use test_support::HttpObjectClient;

struct Served {
    store: FsStore,
    _handle: actix_web::dev::ServerHandle,
    dir: std::path::PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn serve() -> Served {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("trellis-fs-{}", test_support::unique_suffix()));
    let store = FsStore::new(
        &dir,
        &format!("http://127.0.0.1:{port}"),
        b"test signing key",
    );
    let routes = configure_fs_routes(store.clone());
    let server =
        actix_web::HttpServer::new(move || actix_web::App::new().configure(routes.clone()))
            .workers(1)
            .listen(listener)
            .unwrap()
            .run();
    let handle = server.handle();
    tokio::spawn(server);
    Served {
        store,
        _handle: handle,
        dir,
    }
}

ports_testing::object_store_contract!(async {
    let served = serve();
    StoreUnderTest {
        store: Arc::new(served.store.clone()),
        client: Arc::new(HttpObjectClient::new()),
        prefix: "t/".into(),
        guard: Box::new(served),
    }
});

#[tokio::test]
async fn forged_forms_and_links_are_refused() {
    let served = serve();
    let store = &served.store;
    let client = HttpObjectClient::new();
    let form = store
        .presign_post(&PostPolicy {
            key: "users/1/a".into(),
            content_type: "image/png".into(),
            min_bytes: 1,
            max_bytes: 100,
            expires_in: Duration::from_secs(300),
        })
        .unwrap();
    let mut forged = form.clone();
    forged
        .fields
        .insert("x-amz-signature".into(), "00".repeat(32));
    assert_eq!(client.post(&forged, vec![1; 10]).await.0, 403);
    let mut widened = form.clone();
    let policy = widened.fields.get_mut("policy").unwrap();
    *policy = policy.replace('A', "B");
    assert_eq!(client.post(&widened, vec![1; 10]).await.0, 403);
    let mut not_a_form = form.clone();
    not_a_form.fields.remove("policy");
    assert_eq!(client.post(&not_a_form, vec![1; 10]).await.0, 400);
    assert_eq!(store.head("users/1/a").await.unwrap(), None);

    assert_eq!(client.post(&form, vec![1; 10]).await.0, 204);
    let url = store
        .read_url("users/1/a", Duration::from_secs(60))
        .unwrap();
    assert_eq!(client.get(&url).await, Some(vec![1; 10]));
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(
        client.get(&url.replace("users/1/a", "users/1/b")).await,
        None
    );
    let (base, _) = url.split_once("signature=").unwrap();
    assert_eq!(
        client
            .get(&format!("{base}signature={}", "0".repeat(64)))
            .await,
        None
    );
    let expired = url.replace("expires=", "expires=1");
    assert_eq!(
        client.get(&expired).await,
        None,
        "the signature covers the expiry"
    );
    // Keys that would leave the store's directory are never used.
    assert!(
        store
            .read_url("../etc/passwd", Duration::from_secs(60))
            .is_err()
    );
    assert_eq!(
        reqwest::get(format!(
            "{}/storage/o/..%2F..%2Fetc%2Fpasswd?expires=99999999999&signature=00",
            url.split("/storage/").next().unwrap()
        ))
        .await
        .unwrap()
        .status(),
        403
    );
}

/// Posts `body` to the store's form endpoint with `boundary`.
async fn post_raw(served: &Served, boundary: &str, body: Vec<u8>) -> (u16, String) {
    let form = served
        .store
        .presign_post(&PostPolicy {
            key: "users/1/raw".into(),
            content_type: "image/png".into(),
            min_bytes: 1,
            max_bytes: 100,
            expires_in: Duration::from_secs(300),
        })
        .unwrap();
    let res = reqwest::Client::new()
        .post(&form.url)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test]
async fn boundaries_longer_than_rfc_2046_allows_are_refused_unread() {
    let served = serve();
    let boundary = "-".repeat(100_000);
    let (status, body) = post_raw(&served, &boundary, b"-".repeat(1024 * 1024)).await;
    assert_eq!(
        (status, body.contains("MalformedPOSTRequest")),
        (400, true),
        "{body}"
    );
}

#[tokio::test]
async fn a_body_built_to_defeat_a_naive_boundary_search_is_refused() {
    let served = serve();
    // The longest boundary RFC 2046 allows, and 20 MiB of what almost
    // matches it: a scan that restarts at every byte does 70 comparisons a
    // byte; the parser's search is linear.
    let boundary = "-".repeat(70);
    let mut body =
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"policy\"\r\n\r\n")
            .into_bytes();
    body.extend(std::iter::repeat_n(b'-', 20 * 1024 * 1024));
    let (status, text) = post_raw(&served, &boundary, body).await;
    assert_eq!(status, 400, "{text}");
    // And the store still answers.
    let client = HttpObjectClient::new();
    let form = served
        .store
        .presign_post(&PostPolicy {
            key: "users/1/after".into(),
            content_type: "image/png".into(),
            min_bytes: 1,
            max_bytes: 100,
            expires_in: Duration::from_secs(300),
        })
        .unwrap();
    assert_eq!(client.post(&form, vec![7; 10]).await.0, 204);
}

#[tokio::test]
async fn a_file_over_the_policy_is_refused_and_leaves_nothing() {
    let served = serve();
    let client = HttpObjectClient::new();
    let form = served
        .store
        .presign_post(&PostPolicy {
            key: "users/1/big".into(),
            content_type: "image/png".into(),
            min_bytes: 1,
            max_bytes: 100,
            expires_in: Duration::from_secs(300),
        })
        .unwrap();
    assert_eq!(client.post(&form, vec![1; 101]).await.0, 400);
    assert_eq!(served.store.head("users/1/big").await.unwrap(), None);
    let leftovers: Vec<_> = walk(&served.dir);
    assert!(
        leftovers
            .iter()
            .all(|p| !p.to_string_lossy().contains("tmp-")),
        "{leftovers:?}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

//! `FsStore` served by a real actix-web server, through the same presigned
//! flow as S3: the contract suite over real HTTP, and forged forms and
//! links refused.

#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use ports::testing::ObjectClient as _;
use ports::testing::contract::storage::StoreUnderTest;
use ports::{ObjectStore as _, PostPolicy};
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

ports::object_store_contract!(async {
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

//! Postgres that accepts only TLS (a cluster of the test's own, `hostssl`
//! only, its certificate from a CA the test makes): libpq's `sslmode`
//! values mean what they mean to libpq, and a failure says why.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use diesel_async::RunQueryDsl as _;
use postgres_adapter::{PgSettings, build_pool, connect, run_migrations};
use test_support::{TestCa, TlsPostgres};

#[derive(diesel::QueryableByName)]
struct Ssl {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    ssl: bool,
}

/// Whether this session is encrypted (from the server's side).
async fn encrypted(conn: &mut diesel_async::AsyncPgConnection) -> bool {
    diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result::<Ssl>(conn)
        .await
        .unwrap()
        .ssl
}

async fn refused(url: &str) -> String {
    match connect(url).await {
        Ok(_) => panic!("{url} connected"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn every_sslmode_means_what_it_means_to_libpq() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = TestCa::new("pg");
    let pg = TlsPostgres::start(&ca, &["localhost"], false);
    let root = ca.ca_file();
    let root = root.display();

    // verify-full with the right CA and the certificate's name.
    let mut conn = connect(&pg.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={root}"),
    ))
    .await
    .unwrap();
    assert!(encrypted(&mut conn).await);
    // require and prefer encrypt without verifying; verify-ca checks the
    // chain, not the name.
    for query in [
        "sslmode=require".to_owned(),
        "sslmode=prefer".to_owned(),
        String::new(),
        format!("sslmode=verify-ca&sslrootcert={root}"),
    ] {
        let mut conn = connect(&pg.url("127.0.0.1", &query)).await.unwrap();
        assert!(encrypted(&mut conn).await, "{query}");
    }
    // The server refuses plaintext; allow falls back to TLS.
    let e = refused(&pg.url("127.0.0.1", "sslmode=disable")).await;
    assert!(e.contains("accepts only TLS"), "{e}");
    let mut conn = connect(&pg.url("127.0.0.1", "sslmode=allow"))
        .await
        .unwrap();
    assert!(encrypted(&mut conn).await);

    // What verification refuses, and why.
    let e = refused(&pg.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={root}"),
    ))
    .await;
    assert!(e.contains("does not name this host"), "{e}");
    let other = TestCa::new("other");
    let e = refused(&pg.url(
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            other.ca_file().display()
        ),
    ))
    .await;
    assert!(e.contains("not signed by a trusted CA"), "{e}");
    let e = refused(&pg.url(
        "localhost",
        &format!("sslmode=require&sslrootcert={}", other.ca_file().display()),
    ))
    .await;
    assert!(
        e.contains("not signed by a trusted CA"),
        "require with a root verifies: {e}"
    );
}

#[tokio::test]
async fn an_expired_server_certificate_is_named_as_such() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = TestCa::new("pg-expired");
    let pg = TlsPostgres::start(&ca, &["localhost"], true);
    let e = refused(&pg.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", ca.ca_file().display()),
    ))
    .await;
    assert!(e.contains("expired"), "{e}");
}

#[tokio::test]
async fn a_server_without_tls_is_named_as_such() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = TestCa::new("pg-plain");
    let pg = TlsPostgres::without_tls(&ca);
    let e = refused(&pg.url("127.0.0.1", "sslmode=require")).await;
    assert!(e.contains("does not offer TLS"), "{e}");
    // prefer (the default) falls back to plaintext, as libpq does.
    let mut conn = connect(&pg.url("127.0.0.1", "")).await.unwrap();
    assert!(!encrypted(&mut conn).await);
}

#[tokio::test]
async fn the_pool_and_migrations_work_over_tls_with_verify_full() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = TestCa::new("pg-pool");
    let pg = TlsPostgres::start(&ca, &["localhost"], false);
    let url = pg.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", ca.ca_file().display()),
    );
    let applied = run_migrations(&url).await.unwrap();
    assert!(!applied.is_empty());
    let pool = build_pool(&PgSettings::new(url)).unwrap();
    let mut conn = pool.get().await.unwrap();
    assert!(encrypted(&mut conn).await);
}

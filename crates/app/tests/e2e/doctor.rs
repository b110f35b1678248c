//! `app doctor` against real servers on loopback: the machine's Postgres
//! and Redis, a TLS-only Postgres cluster and a TLS-only Redis with the
//! test's own CA, PgBouncer in transaction mode, an evicting Redis, an SMTP
//! server, an S3-compatible server and a fake FCM.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::time::Duration;
use test_support::{
    FakeFcm, PooledDatabase, RedisProcess, S3Server, SmtpSink, TestCa, TestDb, TestRedis,
    TlsPostgres, TlsRedis, free_port,
};

const BIN: &str = env!("CARGO_BIN_EXE_app");

/// What `app doctor` printed, and whether it exited zero.
struct Doctor {
    ok: bool,
    table: String,
}

impl Doctor {
    /// The result and detail of `dependency`'s `check`.
    fn row(&self, dependency: &str, check: &str) -> (String, String) {
        let line = self
            .table
            .lines()
            .find(|l| {
                l.starts_with(dependency)
                    && l[dependency.len()..]
                        .trim_start()
                        .starts_with(&format!("{check} "))
            })
            .unwrap_or_else(|| panic!("no row {dependency} / {check}:\n{}", self.table));
        let rest = line[dependency.len()..].trim_start()[check.len()..].trim_start();
        let (result, detail) = rest.split_once(' ').unwrap_or((rest, ""));
        (result.to_owned(), detail.trim().to_owned())
    }

    fn result(&self, dependency: &str, check: &str) -> String {
        self.row(dependency, check).0
    }
}

const PG: &str = "postgres (DATABASE_URL)";
const PG_DIRECT: &str = "postgres (DATABASE_DIRECT_URL)";
const REDIS: &str = "redis (REDIS_URL)";

fn doctor(env: &[(&str, &str)]) -> Doctor {
    let out = Command::new(BIN)
        .arg("doctor")
        .env_clear()
        .env("APP_ENV", "local")
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DEV_TOKEN_SECRET", test_support::TEST_DEV_TOKEN_SECRET)
        .env("RUST_LOG", "error")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        table.starts_with("dependency"),
        "a table on stdout: {table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Doctor {
        ok: out.status.success(),
        table,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_dependency_configured_each_is_checked_and_passes() {
    let (db, redis) = (TestDb::new().await, TestRedis::new().await);
    let smtp = SmtpSink::start();
    let s3 = S3Server::start();
    let fcm = FakeFcm::start().await;
    let key = fcm.write_credentials(&std::env::temp_dir());
    let (endpoint, token_url) = (s3.endpoint(), fcm.token_url());
    let d = doctor(&[
        ("DATABASE_URL", db.url()),
        ("REDIS_URL", redis.url()),
        ("SMTP_URL", &smtp.url()),
        ("STORAGE_BUCKET", &s3.bucket),
        ("STORAGE_ENDPOINT", &endpoint),
        ("AWS_ACCESS_KEY_ID", &s3.access_key_id),
        ("AWS_SECRET_ACCESS_KEY", &s3.secret_access_key),
        ("GOOGLE_APPLICATION_CREDENTIALS", key.to_str().unwrap()),
        ("FCM_TOKEN_URL", &token_url),
        ("FCM_BASE_URL", &fcm.base_url()),
    ]);
    assert!(d.ok, "{}", d.table);
    for (dependency, check) in [
        (PG, "reachable"),
        (PG, "pooler"),
        (PG, "migrations"),
        (REDIS, "reachable"),
        (REDIS, "eviction"),
        ("smtp (SMTP_URL)", "connect"),
        ("storage (STORAGE_BUCKET)", "signed request"),
        ("fcm (GOOGLE_APPLICATION_CREDENTIALS)", "access token"),
    ] {
        assert_eq!(d.result(dependency, check), "ok", "{}", d.table);
    }
    assert!(d.row(PG, "reachable").1.starts_with("PostgreSQL "));
    assert!(d.row(REDIS, "reachable").1.contains("standalone"));
    assert_eq!(d.row(REDIS, "eviction").1, "maxmemory-policy noeviction");
    assert!(
        !fcm.oauth_requests().is_empty(),
        "the doctor asked for a token"
    );
    // The shared test Redis keeps nothing on disk.
    assert_eq!(d.result(REDIS, "persistence"), "WARN", "{}", d.table);

    // The wrong secret for the bucket, an SMTP server that is gone.
    let mut smtp = smtp;
    smtp.stop();
    let d = doctor(&[
        ("DATABASE_URL", db.url()),
        ("REDIS_URL", redis.url()),
        ("SMTP_URL", &smtp.url()),
        ("STORAGE_BUCKET", &s3.bucket),
        ("STORAGE_ENDPOINT", &endpoint),
        ("AWS_ACCESS_KEY_ID", &s3.access_key_id),
        ("AWS_SECRET_ACCESS_KEY", "not-the-secret"),
    ]);
    assert!(!d.ok);
    assert_eq!(d.result("smtp (SMTP_URL)", "connect"), "FAIL");
    assert_eq!(
        d.result("storage (STORAGE_BUCKET)", "signed request"),
        "FAIL"
    );
    assert!(!d.table.contains("not-the-secret"), "{}", d.table);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_behind_on_its_migrations_fails_and_says_which() {
    let (db, redis) = (TestDb::empty().await, TestRedis::new().await);
    let d = doctor(&[("DATABASE_URL", db.url()), ("REDIS_URL", redis.url())]);
    assert!(!d.ok);
    let (result, detail) = d.row(PG, "migrations");
    assert_eq!(result, "FAIL");
    assert!(
        detail.contains("pending") && detail.contains("app migrate"),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_against_a_tls_only_postgres_shows_the_handshake_and_a_wrong_ca_fails() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = TestCa::new("doctor-pg");
    let pg = TlsPostgres::start(&ca, &["localhost"], false);
    let redis = TestRedis::new().await;
    let root = ca.ca_file();
    let url = pg.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", root.display()),
    );
    postgres_adapter::run_migrations(&url).await.unwrap();
    let d = doctor(&[("DATABASE_URL", &url), ("REDIS_URL", redis.url())]);
    assert!(d.ok, "{}", d.table);
    let (result, detail) = d.row(PG, "tls");
    assert_eq!(result, "ok", "{}", d.table);
    assert!(detail.starts_with("TLSv1.3, verified against "), "{detail}");
    assert!(detail.contains(&root.display().to_string()), "{detail}");
    assert!(
        detail.contains("CN=") && detail.contains("valid until"),
        "{detail}"
    );
    assert_eq!(d.result(PG, "migrations"), "ok");

    // Another CA: the reason, and a failure.
    let other = TestCa::new("doctor-other");
    let wrong = pg.url(
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            other.ca_file().display()
        ),
    );
    let d = doctor(&[("DATABASE_URL", &wrong), ("REDIS_URL", redis.url())]);
    assert!(!d.ok);
    let (result, detail) = d.row(PG, "tls");
    assert_eq!(result, "FAIL");
    assert!(detail.contains("not signed by a trusted CA"), "{detail}");
    assert_eq!(d.result(PG, "reachable"), "FAIL");

    // The right CA, a name the certificate does not carry.
    let by_ip = pg.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", root.display()),
    );
    let d = doctor(&[("DATABASE_URL", &by_ip), ("REDIS_URL", redis.url())]);
    assert!(!d.ok);
    assert!(
        d.row(PG, "tls").1.contains("does not name this host"),
        "{}",
        d.table
    );

    // Encrypted but unverified: a warning, not a pass.
    let d = doctor(&[
        ("DATABASE_URL", &pg.url("127.0.0.1", "sslmode=require")),
        ("REDIS_URL", redis.url()),
    ]);
    let (result, detail) = d.row(PG, "tls");
    assert_eq!(result, "WARN");
    assert!(detail.contains("NOT verified"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_client_certificate_is_checked_and_without_one_fails() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = TestCa::new("doctor-redis");
    let redis = TlsRedis::start(&ca, true);
    let client = ca.issue("client", &["trellis-client"], false);
    let db = TestDb::new().await;
    let ca_file = ca.ca_file();
    let (ca_file, cert, key) = (
        ca_file.to_str().unwrap(),
        client.cert.to_str().unwrap(),
        client.key.to_str().unwrap(),
    );
    let url = redis.url();
    let d = doctor(&[
        ("DATABASE_URL", db.url()),
        ("REDIS_URL", &url),
        ("REDIS_TLS_CA_FILE", ca_file),
        ("REDIS_TLS_CERT_FILE", cert),
        ("REDIS_TLS_KEY_FILE", key),
    ]);
    assert!(d.ok, "{}", d.table);
    let (result, detail) = d.row(REDIS, "tls");
    assert_eq!(result, "ok");
    assert!(
        detail.starts_with("TLSv1.3, verified against the system's roots and REDIS_TLS_CA_FILE"),
        "{detail}"
    );
    assert_eq!(d.result(REDIS, "reachable"), "ok");

    let d = doctor(&[
        ("DATABASE_URL", db.url()),
        ("REDIS_URL", &url),
        ("REDIS_TLS_CA_FILE", ca_file),
    ]);
    assert!(!d.ok, "{}", d.table);
    let (result, detail) = d.row(REDIS, "reachable");
    assert_eq!(result, "FAIL", "{}", d.table);
    assert!(detail.contains("requires a client certificate"), "{detail}");

    // Without the CA: the system's roots do not know the test's.
    let d = doctor(&[("DATABASE_URL", db.url()), ("REDIS_URL", &url)]);
    assert!(!d.ok);
    assert!(
        d.row(REDIS, "tls").1.contains("not signed by a trusted CA"),
        "{}",
        d.table
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_pooler_is_seen_and_needs_the_direct_url_beside_it() {
    let db = PooledDatabase::new(2).await;
    let redis = TestRedis::new().await;
    let d = doctor(&[("DATABASE_URL", db.url()), ("REDIS_URL", redis.url())]);
    assert!(!d.ok, "{}", d.table);
    let (result, detail) = d.row(PG, "pooler");
    assert_eq!(result, "FAIL");
    assert!(detail.contains("set DATABASE_DIRECT_URL"), "{detail}");

    let d = doctor(&[
        ("DATABASE_URL", db.url()),
        ("DATABASE_DIRECT_URL", db.direct_url()),
        ("REDIS_URL", redis.url()),
    ]);
    assert!(d.ok, "{}", d.table);
    assert_eq!(d.result(PG, "pooler"), "ok");
    assert_eq!(d.result(PG_DIRECT, "reachable"), "ok");
    assert_eq!(d.result(PG_DIRECT, "migrations"), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_behind_a_sentinel_is_reached_through_it() {
    let ha = test_support::TestSentinel::start();
    let db = TestDb::new().await;
    let url = ha.url();
    let d = doctor(&[("DATABASE_URL", db.url()), ("REDIS_URL", &url)]);
    let (result, detail) = d.row(REDIS, "reachable");
    assert_eq!(result, "ok", "{}", d.table);
    assert!(
        detail.contains("sentinel, primary with 1 replica(s)"),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_redis_fails_the_doctor_and_is_warned_of_at_startup() {
    let redis = RedisProcess::start();
    let set = Command::new("redis-cli")
        .args(["-p", &redis.port().to_string()])
        .args(["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"])
        .output()
        .unwrap();
    assert!(set.status.success());
    let db = TestDb::new().await;
    let url = redis.url();
    let d = doctor(&[("DATABASE_URL", db.url()), ("REDIS_URL", &url)]);
    assert!(!d.ok);
    let (result, detail) = d.row(REDIS, "eviction");
    assert_eq!(result, "FAIL");
    assert!(detail.contains("allkeys-lru"), "{detail}");

    // `app serve` says it at startup.
    let mut child = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .env("APP_ENV", "local")
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DEV_TOKEN_SECRET", test_support::TEST_DEV_TOKEN_SECRET)
        .env("DATABASE_URL", db.url())
        .env("REDIS_URL", &url)
        .env("HTTP_HOST", "127.0.0.1")
        .env("HTTP_PORT", free_port().to_string())
        .env("MIGRATE_ON_START", "false")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("REDIS MAY EVICT") {
                let _ = tx.send(line);
                return;
            }
        }
    });
    // The check runs once Redis answers (at once here); its own timeout is
    // 30 s.
    let warned = rx.recv_timeout(Duration::from_secs(35));
    let _ = child.kill();
    let _ = child.wait();
    let line = warned.expect("the startup warning");
    assert!(line.contains("allkeys-lru"), "{line}");
}

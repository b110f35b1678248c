//! The `app` binary as a process: configuration errors, signals, outages.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use test_support::{RedisProcess, TestDb, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_app");

fn app_command(db: &TestDb, redis_url: &str, port: u16) -> Command {
    role_command("serve", db, redis_url, port)
}

fn role_command(role: &str, db: &TestDb, redis_url: &str, port: u16) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg(role)
        .env_clear()
        .env("APP_ENV", "local")
        .env("DEV_TOKEN_SECRET", test_support::TEST_DEV_TOKEN_SECRET)
        .env(
            "REDIS_KEY_PREFIX",
            format!("test:proc:{}:", test_support::unique_suffix()),
        )
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db.url())
        .env("REDIS_URL", redis_url)
        .env("HTTP_HOST", "127.0.0.1")
        .env("HTTP_PORT", port.to_string())
        .env("MIGRATE_ON_START", "false")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

async fn wait_healthy(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "the app never became healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_bad_setting_exits_non_zero_naming_the_variable() {
    let out = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .env("DATABASE_URL", "nonsense")
        .env("HTTP_PORT", "not-a-port")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    assert!(
        stderr.contains("HTTP_PORT"),
        "both problems at once: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[test]
fn a_server_whose_app_env_was_forgotten_refuses_to_start_as_local() {
    let dir = std::env::temp_dir().join(format!("trellis-noenv-{}", test_support::unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .current_dir(&dir)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "FIREBASE_PROJECT_ID",
        "CURSOR_SECRET",
        "APP_ENV: is not set, so production's rules apply",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    // A developer's token tool still works there, with the checkout's own
    // random secret (made under var/), never a constant.
    let out = Command::new(BIN)
        .args(["dev-token", "--uid", "alice"])
        .env_clear()
        .current_dir(&dir)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .split('.')
            .count(),
        3
    );
    let secret = std::fs::read_to_string(dir.join("var/dev-token-secret")).unwrap();
    assert!(secret.trim().len() >= 32);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_idle_exits_zero_within_a_second() {
    // Every role: `all` (the default) and `worker` also stop stream
    // consumers in the middle of a blocking read, the relay and the queue.
    for role in ["serve", "worker", "all"] {
        let db = TestDb::new().await;
        let port = free_port();
        let mut child = role_command(role, &db, "redis://127.0.0.1:6379", port)
            .spawn()
            .unwrap();
        wait_healthy(port).await;
        // Let the background loops settle into their blocking waits.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let start = Instant::now();
        sigterm(&child);
        let status = wait_exit(&mut child, Duration::from_secs(5));
        assert!(status.success(), "{role}: {status:?}");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{role} took {:?}",
            start.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_drain_delay_sigterm_turns_readiness_off_but_keeps_serving_until_it_ends() {
    let db = TestDb::new().await;
    let port = free_port();
    let mut child = app_command(&db, "redis://127.0.0.1:6379", port)
        .env("SHUTDOWN_DRAIN_MS", "1500")
        .spawn()
        .unwrap();
    wait_healthy(port).await;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let client = reqwest::Client::new();
    assert_eq!(
        client.get(url("/readyz")).send().await.unwrap().status(),
        200
    );
    let start = Instant::now();
    sigterm(&child);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // New connections are still accepted and served during the drain.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let ready = fresh.get(url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.headers().contains_key("retry-after"));
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["code"], "shutting_down", "{body}");
    assert_eq!(
        fresh.get(url("/healthz")).send().await.unwrap().status(),
        200
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited during the drain"
    );
    let status = wait_exit(&mut child, Duration::from_secs(6));
    assert!(status.success(), "{status:?}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(3),
        "exited {took:?} after SIGTERM; the drain is 1.5 s"
    );

    // A second signal cuts the drain short.
    let mut child = app_command(&db, "redis://127.0.0.1:6379", port)
        .env("SHUTDOWN_DRAIN_MS", "60000")
        .spawn()
        .unwrap();
    wait_healthy(port).await;
    let start = Instant::now();
    sigterm(&child);
    tokio::time::sleep(Duration::from_millis(200)).await;
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert!(status.success(), "{status:?}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "a second signal did not end the drain: {:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_creates_a_missing_database_and_applies_every_migration() {
    let scratch = test_support::ScratchDatabase::new().await;
    let run = || {
        Command::new(BIN)
            .arg("migrate")
            .env_clear()
            .env("APP_ENV", "local")
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DEV_TOKEN_SECRET", test_support::TEST_DEV_TOKEN_SECRET)
            .env("DATABASE_URL", scratch.url())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(scratch.exists().await, "local mode creates the database");
    let tables = scratch
        .scalar(
            "SELECT count(*) AS value FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_name IN ('users', 'push_tokens', 'outbox')",
        )
        .await;
    assert_eq!(tables, 3);
    let applied = scratch
        .scalar("SELECT count(*) AS value FROM __diesel_schema_migrations")
        .await;
    let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().join("up.sql").exists())
        .count();
    assert_eq!(
        usize::try_from(applied).unwrap(),
        on_disk,
        "every migration applied"
    );
    let again = run();
    assert!(again.status.success(), "migrate is idempotent");
}

#[tokio::test(flavor = "multi_thread")]
async fn production_never_creates_a_database() {
    let scratch = test_support::ScratchDatabase::new().await;
    let out = Command::new(BIN)
        .arg("migrate")
        .env_clear()
        .env("APP_ENV", "production")
        .env("FIREBASE_PROJECT_ID", "p")
        .env("CURSOR_SECRET", "0123456789abcdef0123")
        .env("DATABASE_URL", scratch.url())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Postgres"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !scratch.exists().await,
        "production never creates databases"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_follows_redis_down_and_back_up_without_a_restart() {
    let db = TestDb::new().await;
    let mut redis = RedisProcess::start();
    let port = free_port();
    let mut child = app_command(&db, &redis.url(), port).spawn().unwrap();
    wait_healthy(port).await;
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    assert_eq!(reqwest::get(&readyz).await.unwrap().status(), 200);

    redis.stop();
    let stopped = Instant::now();
    // One check a second serves every caller, so an answer may be a second
    // old; each check takes at most its 1.5 s timeout. Each answer comes
    // within that timeout (and some slack), and the stop shows within the
    // two of them.
    let (max_age, check_timeout, slack) = (
        Duration::from_secs(1),
        Duration::from_millis(1500),
        Duration::from_millis(500),
    );
    let res = loop {
        let start = Instant::now();
        let res = reqwest::get(&readyz).await.unwrap();
        assert!(
            start.elapsed() < check_timeout + slack,
            "readiness answered in {:?}",
            start.elapsed()
        );
        if res.status() != 200 {
            break res;
        }
        assert!(
            stopped.elapsed() < max_age + check_timeout + slack,
            "readiness still 200 {:?} after Redis stopped",
            stopped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["code"], "not_ready");
    assert_eq!(body["checks"]["redis"], "down");
    assert_eq!(body["checks"]["postgres"], "ok");
    assert!(child.try_wait().unwrap().is_none(), "the process stays up");

    redis.resume();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if reqwest::get(&readyz).await.unwrap().status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "readiness never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_json_with_one_access_line_per_request() {
    let db = TestDb::new().await;
    let port = free_port();
    let mut child = app_command(&db, "redis://127.0.0.1:6379", port)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .spawn()
        .unwrap();
    wait_healthy(port).await;
    let client = reqwest::Client::new();
    for i in 0..3 {
        let res = client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .header("x-request-id", format!("count-me-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.headers()["x-request-id"],
            format!("count-me-{i}").as_str()
        );
    }
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(5)).success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 3, "{stderr}");
    for i in 0..3 {
        let id = format!("count-me-{i}");
        let access = lines
            .iter()
            .filter(|l| l["target"] == "access" && l.to_string().contains(&id))
            .count();
        assert_eq!(access, 1, "request {id}: {access} access lines");
    }
}

#[test]
fn a_dot_env_file_in_the_working_directory_is_read() {
    let dir =
        std::env::temp_dir().join(format!("trellis-dotenv-{}", test_support::unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".env"), "HTTP_PORT=from-dot-env\n").unwrap();
    let out = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .current_dir(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("HTTP_PORT") && stderr.contains("from-dot-env"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn query_string_tokens_never_reach_a_log_line() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let db = TestDb::new().await;
    let port = free_port();
    let mut child = app_command(&db, "redis://127.0.0.1:6379", port)
        .env("LOG_FORMAT", "json")
        // Everything the app and its libraries log at debug, not just info.
        .env("RUST_LOG", "debug")
        .spawn()
        .unwrap();
    wait_healthy(port).await;
    let valid = auth_adapter::mint_dev_token(
        test_support::TEST_DEV_TOKEN_SECRET,
        app::settings::LOCAL_PROJECT_ID,
        &auth_adapter::DevTokenRequest {
            uid: "logged".into(),
            email: None,
            email_verified: true,
            name: None,
            ttl: Duration::from_secs(600),
            claims: serde_json::Map::new(),
        },
    )
    .unwrap();
    let forged = "forged-token-4b1d.never-log-me.x";
    // A socket opened with a good token, one refused, and the same tokens
    // on paths nothing serves.
    let req = format!("ws://127.0.0.1:{port}/ws?access_token={valid}")
        .into_client_request()
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    drop(ws.close(None).await);
    let refused = tokio_tungstenite::connect_async(
        format!("ws://127.0.0.1:{port}/ws?access_token={forged}")
            .into_client_request()
            .unwrap(),
    )
    .await;
    assert!(refused.is_err(), "a forged token gets no socket");
    let client = reqwest::Client::new();
    for token in [valid.as_str(), forged] {
        for path in ["/no-such-path", "/ws/extra", "/api/v1/nope"] {
            let res = client
                .get(format!(
                    "http://127.0.0.1:{port}{path}?access_token={token}"
                ))
                .send()
                .await
                .unwrap();
            assert!(res.status().is_client_error(), "{path}");
        }
    }
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(5)).success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.lines().count() > 10,
        "the app logged its requests: {stderr}"
    );
    // The token's signature alone would be enough to replay it.
    let signature = valid.rsplit('.').next().unwrap();
    for secret in [valid.as_str(), signature, forged] {
        assert!(
            !stderr.contains(secret),
            "a token reached the logs: {}",
            stderr
                .lines()
                .find(|l| l.contains(secret))
                .unwrap_or_default()
        );
    }
}

/// The whole app (`all`: HTTP, the relay, consumers, the job worker) on a
/// Postgres that takes only TLS (`verify-full` with the test's CA) and a
/// Redis that speaks only TLS and asks for a client certificate: ready,
/// and a sign-up goes through.
#[tokio::test(flavor = "multi_thread")]
async fn the_app_runs_on_a_tls_only_postgres_and_a_tls_only_redis() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = test_support::TestCa::new("app-tls");
    let pg = test_support::TlsPostgres::start(&ca, &["localhost"], false);
    let redis = test_support::TlsRedis::start(&ca, true);
    let client = ca.issue("app-client", &["trellis"], false);
    let root = ca.ca_file();
    let url = pg.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", root.display()),
    );
    let port = free_port();
    let mut child = Command::new(BIN)
        .arg("all")
        .env_clear()
        .env("APP_ENV", "local")
        .env("DEV_TOKEN_SECRET", test_support::TEST_DEV_TOKEN_SECRET)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &url)
        .env("REDIS_URL", redis.url())
        .env("REDIS_TLS_CA_FILE", &root)
        .env("REDIS_TLS_CERT_FILE", &client.cert)
        .env("REDIS_TLS_KEY_FILE", &client.key)
        .env("HTTP_HOST", "127.0.0.1")
        .env("HTTP_PORT", port.to_string())
        .env("MIGRATE_ON_START", "true")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reqwest::get(&readyz).await.is_ok_and(|r| r.status() == 200) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the app exited over TLS"
        );
        assert!(Instant::now() < deadline, "never ready over TLS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = auth_adapter::mint_dev_token(
        test_support::TEST_DEV_TOKEN_SECRET,
        app::settings::LOCAL_PROJECT_ID,
        &auth_adapter::DevTokenRequest {
            uid: "tls-user".into(),
            email: Some("tls@example.com".into()),
            email_verified: true,
            name: None,
            ttl: Duration::from_secs(600),
            claims: serde_json::Map::new(),
        },
    )
    .unwrap();
    let me = format!("http://127.0.0.1:{port}/api/v1/me");
    let http = reqwest::Client::new();
    let created = http
        .patch(&me)
        .bearer_auth(&token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let read = http.get(&me).bearer_auth(&token).send().await.unwrap();
    assert_eq!(read.status(), 200);
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
}

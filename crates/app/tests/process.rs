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
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .env_clear()
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

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_idle_exits_zero_within_a_second() {
    let db = TestDb::new().await;
    let port = free_port();
    let mut child = app_command(&db, "redis://127.0.0.1:6379", port)
        .spawn()
        .unwrap();
    wait_healthy(port).await;
    let start = Instant::now();
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert!(status.success(), "{status:?}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
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
    let start = Instant::now();
    let res = reqwest::get(&readyz).await.unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "readiness answered in {:?}",
        start.elapsed()
    );
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

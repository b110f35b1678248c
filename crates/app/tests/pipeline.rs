//! The welcome pipeline across real processes: `app serve` and `app worker`
//! against real Postgres, Redis and an SMTP server.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use serde_json::json;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use test_support::{SmtpBehaviour, SmtpSink, TestDb, TestRedis, free_port, unique_suffix};

const BIN: &str = env!("CARGO_BIN_EXE_app");

/// One `app` process; killed on drop.
struct Proc {
    child: Child,
    port: u16,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Env<'a> {
    db: &'a TestDb,
    redis: &'a TestRedis,
    smtp: &'a SmtpSink,
}

impl Env<'_> {
    fn command(&self, role: &str, port: u16) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg(role)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", self.db.url())
            .env("REDIS_URL", self.redis.url())
            .env("REDIS_KEY_PREFIX", self.redis.prefix())
            .env("SMTP_URL", self.smtp.url())
            .env("MAIL_FROM", "Trellis <welcome@trellis.test>")
            .env("DEV_TOKEN_SECRET", test_support::TEST_DEV_TOKEN_SECRET)
            .env("HTTP_HOST", "127.0.0.1")
            .env("HTTP_PORT", port.to_string())
            .env("MIGRATE_ON_START", "false")
            .env("JOB_RETRY_BASE_MS", "200")
            .env("JOB_LEASE_SECS", "2")
            .env("STREAM_CLAIM_IDLE_MS", "1000")
            .env("SHUTDOWN_TIMEOUT_SECS", "5")
            .env("INSTANCE_ID", format!("{role}-{}", unique_suffix()))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    async fn start(&self, role: &str) -> Proc {
        let port = free_port();
        let child = self.command(role, port).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(Instant::now() < deadline, "app {role} never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Proc { child, port }
    }

    async fn jobs(&self, args: &[&str]) -> String {
        let out = self
            .command("jobs", 0)
            .args(args)
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn token(uid: &str, email: Option<&str>, name: Option<&str>) -> String {
    let req = auth_adapter::DevTokenRequest {
        uid: uid.into(),
        email: email.map(Into::into),
        name: name.map(Into::into),
        ttl: Duration::from_secs(600),
    };
    auth_adapter::mint_dev_token(
        test_support::TEST_DEV_TOKEN_SECRET,
        app::settings::LOCAL_PROJECT_ID,
        &req,
    )
    .unwrap()
}

async fn patch_me(serve: &Proc, token: &str, body: serde_json::Value) -> u16 {
    reqwest::Client::new()
        .patch(format!("http://127.0.0.1:{}/api/v1/me", serve.port))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Gives the pipeline time to (wrongly) send more, then returns what arrived.
async fn settle(smtp: &SmtpSink) -> Vec<test_support::ReceivedMail> {
    tokio::time::sleep(Duration::from_millis(2500)).await;
    smtp.messages()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_user_gets_exactly_one_welcome_mail_across_processes() {
    let (db, redis, smtp) = (
        TestDb::new().await,
        TestRedis::new().await,
        SmtpSink::start(),
    );
    let env = Env {
        db: &db,
        redis: &redis,
        smtp: &smtp,
    };
    let serve = env.start("serve").await;
    let _worker = env.start("worker").await;

    let ada = token("ada", Some("ada@example.com"), Some("Ada Lovelace"));
    assert_eq!(patch_me(&serve, &ada, json!({})).await, 201);
    let got = smtp.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].rcpt_tos, ["ada@example.com"]);
    assert_eq!(got[0].to_name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(got[0].subject, "Welcome to Trellis, Ada Lovelace!");
    assert!(got[0].text.as_deref().unwrap().contains("Hi Ada Lovelace,"));

    assert_eq!(
        patch_me(&serve, &ada, json!({"display_name": "Countess"})).await,
        200
    );

    let bob = token("bob", Some("bob@example.com"), None);
    assert_eq!(patch_me(&serve, &bob, json!({})).await, 201);
    smtp.wait_for(2, Duration::from_secs(30)).await;
    let all = settle(&smtp).await;
    assert_eq!(
        all.len(),
        2,
        "one mail per new user, nothing for the update"
    );
    let bobs = all
        .iter()
        .find(|m| m.rcpt_tos == ["bob@example.com"])
        .unwrap();
    assert_eq!(
        bobs.subject, "Welcome to Trellis, bob@example.com!",
        "greeted by e-mail without a name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_answers_451_at_first_gets_the_mail_once_later() {
    let (db, redis) = (TestDb::new().await, TestRedis::new().await);
    let smtp = SmtpSink::start_with(SmtpBehaviour {
        fail_first: 2,
        ..SmtpBehaviour::default()
    });
    let env = Env {
        db: &db,
        redis: &redis,
        smtp: &smtp,
    };
    let serve = env.start("serve").await;
    let _worker = env.start("worker").await;
    assert_eq!(
        patch_me(
            &serve,
            &token("late", Some("late@example.com"), Some("Late")),
            json!({})
        )
        .await,
        201
    );
    smtp.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(settle(&smtp).await.len(), 1);
    let stats = env.jobs(&["stats"]).await;
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("mail") && l.split_whitespace().nth(7) == Some("2")),
        "two failed attempts: {stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_answers_550_leaves_a_dead_job_with_the_reply() {
    let (db, redis) = (TestDb::new().await, TestRedis::new().await);
    let smtp = SmtpSink::start_with(SmtpBehaviour {
        always_reply: Some("550 5.1.1 User unknown".into()),
        ..SmtpBehaviour::default()
    });
    let env = Env {
        db: &db,
        redis: &redis,
        smtp: &smtp,
    };
    let serve = env.start("serve").await;
    let _worker = env.start("worker").await;
    assert_eq!(
        patch_me(
            &serve,
            &token("gone", Some("gone@example.com"), None),
            json!({})
        )
        .await,
        201
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let out = env.jobs(&["dead"]).await;
        if out.contains("email:welcome") {
            break out;
        }
        assert!(Instant::now() < deadline, "no dead job: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        dead.contains("550") && dead.contains("User unknown"),
        "{dead}"
    );
    assert!(
        dead.contains("attempts=1"),
        "a permanent refusal is not retried: {dead}"
    );
    assert!(smtp.messages().is_empty());
}

fn per_recipient(mails: &[test_support::ReceivedMail]) -> HashMap<String, Vec<String>> {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for mail in mails {
        m.entry(mail.rcpt_tos[0].clone())
            .or_default()
            .push(mail.message_id.clone());
    }
    m
}

async fn create_crowd(serve: &Proc, users: usize) {
    for i in 0..users {
        let t = token(
            &format!("crowd-{i}"),
            Some(&format!("crowd{i}@example.com")),
            Some(&format!("Crowd {i}")),
        );
        assert_eq!(patch_me(serve, &t, json!({})).await, 201);
    }
}

async fn wait_for_recipients(smtp: &SmtpSink, n: usize) -> HashMap<String, Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = per_recipient(&smtp.messages());
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} users got a mail",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_pipeline_and_restarted_still_mails_everyone_once() {
    const USERS: usize = 20;
    let (db, redis) = (TestDb::new().await, TestRedis::new().await);
    let mut smtp = SmtpSink::start();
    smtp.stop();
    let env = Env {
        db: &db,
        redis: &redis,
        smtp: &smtp,
    };
    let serve = env.start("serve").await;
    let worker = env.start("worker").await;
    create_crowd(&serve, USERS).await;
    // The worker has relayed, consumed and leased what it could, and its
    // sends are failing: kill it in the middle of all that.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(worker);
    smtp.resume();
    let env = Env {
        db: &db,
        redis: &redis,
        smtp: &smtp,
    };
    let _worker = env.start("worker").await;
    wait_for_recipients(&smtp, USERS).await;
    let got = per_recipient(&settle(&smtp).await);
    assert_eq!(got.len(), USERS);
    assert!(
        got.values().all(|ids| ids.len() == 1),
        "nobody got two: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_while_sending_loses_no_mail_and_repeats_only_the_sends_in_flight() {
    const USERS: usize = 20;
    let (db, redis, smtp) = (
        TestDb::new().await,
        TestRedis::new().await,
        SmtpSink::start(),
    );
    let env = Env {
        db: &db,
        redis: &redis,
        smtp: &smtp,
    };
    let serve = env.start("serve").await;
    let worker = env.start("worker").await;
    create_crowd(&serve, USERS).await;
    // Kill as the first mails are accepted: the server has a mail whose
    // acceptance the worker may not have heard of. SMTP cannot make that
    // exactly-once; the repeat carries the same Message-ID so mailbox
    // providers can fold it.
    smtp.wait_for(1, Duration::from_secs(30)).await;
    drop(worker);
    let _worker = env.start("worker").await;
    wait_for_recipients(&smtp, USERS).await;
    let got = per_recipient(&settle(&smtp).await);
    assert_eq!(got.len(), USERS, "nobody was lost");
    let repeats: usize = got.values().map(|ids| ids.len() - 1).sum();
    eprintln!("killed while sending: {repeats} repeated mail(s) of {USERS}");
    assert!(
        repeats <= 16,
        "repeats are bounded by the sends in flight (worker concurrency 16): {repeats}"
    );
    for ids in got.values() {
        assert!(
            ids.iter().all(|id| id == &ids[0]),
            "a repeat has the same Message-ID: {ids:?}"
        );
    }
}

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
use test_support::{
    PooledDatabase, SmtpBehaviour, SmtpSink, TestDb, TestRedis, TestRedisCluster, free_port,
    unique_suffix,
};

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
    db: &'a dyn DbUnderTest,
    redis: &'a dyn RedisUnderTest,
    smtp: &'a SmtpSink,
}

/// An operator password and what the app is told of it.
const OPS_PASSWORD: &str = "a long operator password";

/// The machine's Postgres (a schema of the test's own), or a database
/// behind PgBouncer in transaction mode with its direct endpoint beside.
trait DbUnderTest {
    fn url(&self) -> &str;
    fn direct_url(&self) -> Option<&str>;
}

impl DbUnderTest for TestDb {
    fn url(&self) -> &str {
        TestDb::url(self)
    }
    fn direct_url(&self) -> Option<&str> {
        None
    }
}

impl DbUnderTest for PooledDatabase {
    fn url(&self) -> &str {
        PooledDatabase::url(self)
    }
    fn direct_url(&self) -> Option<&str> {
        Some(PooledDatabase::direct_url(self))
    }
}

/// A single Redis or a Redis Cluster, with a key prefix of this test's own.
trait RedisUnderTest {
    fn url(&self) -> String;
    fn prefix(&self) -> &str;
}

impl RedisUnderTest for TestRedis {
    fn url(&self) -> String {
        TestRedis::url(self).to_owned()
    }
    fn prefix(&self) -> &str {
        TestRedis::prefix(self)
    }
}

/// Behind a Sentinel: a Redis of the test's own, so no prefix is needed.
impl RedisUnderTest for test_support::TestSentinel {
    fn url(&self) -> String {
        test_support::TestSentinel::url(self)
    }
    fn prefix(&self) -> &str {
        "sentinel:"
    }
}

impl RedisUnderTest for TestRedisCluster {
    fn url(&self) -> String {
        TestRedisCluster::url(self)
    }
    fn prefix(&self) -> &str {
        TestRedisCluster::prefix(self)
    }
}

impl Env<'_> {
    fn command(&self, role: &str, port: u16) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg(role)
            .env_clear()
            .env("APP_ENV", "local")
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
        if let Some(direct) = self.db.direct_url() {
            cmd.env("DATABASE_DIRECT_URL", direct);
        }
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
        let out = self.jobs_run(args);
        assert!(out.status.success(), "app jobs {args:?} failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn jobs_run(&self, args: &[&str]) -> std::process::Output {
        self.command("jobs", 0)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    }
}

fn token(uid: &str, email: Option<&str>, name: Option<&str>) -> String {
    token_vouching(uid, email, name, true)
}

/// A token whose `email_verified` claim is `verified`.
fn token_vouching(uid: &str, email: Option<&str>, name: Option<&str>, verified: bool) -> String {
    let req = auth_adapter::DevTokenRequest {
        uid: uid.into(),
        email: email.map(Into::into),
        email_verified: verified,
        name: name.map(Into::into),
        ttl: Duration::from_secs(600),
        claims: serde_json::Map::new(),
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

async fn delete_me(serve: &Proc, token: &str) -> u16 {
    reqwest::Client::new()
        .delete(format!("http://127.0.0.1:{}/api/v1/me", serve.port))
        .bearer_auth(token)
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

/// Signs up a control user with a verified address and waits for its mail:
/// events are relayed and consumed in order, so once it arrives everything
/// signed up before it has been handled.
async fn control_mail_arrives(serve: &Proc, smtp: &SmtpSink, expected_total: usize) {
    let control = token("control", Some("control@example.com"), Some("Control"));
    assert_eq!(patch_me(serve, &control, json!({})).await, 201);
    smtp.wait_for(expected_total, Duration::from_secs(30)).await;
    assert!(
        smtp.messages()
            .iter()
            .any(|m| m.rcpt_tos == ["control@example.com"]),
        "the control mail arrived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uid_deleted_and_created_again_three_times_is_welcomed_once() {
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
    // Created three times, deleted twice in between: the account that
    // stays is welcomed once (a deleted one gets no mail). Each sign-up
    // comes with a token issued after the deletion before it (a token
    // from before proves nothing any more; `iat` counts whole seconds).
    for round in 0..3 {
        let eve = token("eve", Some("eve@example.com"), Some("Eve"));
        assert_eq!(
            patch_me(&serve, &eve, json!({})).await,
            201,
            "round {round}"
        );
        if round < 2 {
            assert_eq!(delete_me(&serve, &eve).await, 202, "round {round}");
            let now = chrono::Utc::now();
            let next_second = 1000 - u64::from(now.timestamp_subsec_millis());
            tokio::time::sleep(Duration::from_millis(next_second)).await;
        }
    }
    control_mail_arrives(&serve, &smtp, 2).await;
    let got = per_recipient(&settle(&smtp).await);
    assert_eq!(got.get("eve@example.com").map(Vec::len), Some(1), "{got:?}");
    assert_eq!(got.len(), 2, "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_nobody_verified_is_never_mailed_until_the_provider_vouches_for_one() {
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
    // An attacker: an unverified token claim, and someone else's address
    // typed into the profile with a message for a name.
    let mallory = token_vouching("mallory", Some("mallory@example.com"), None, false);
    let body =
        json!({"email": "victim@example.com", "display_name": "Claim your prize at evil.example"});
    assert_eq!(patch_me(&serve, &mallory, body).await, 201);
    control_mail_arrives(&serve, &smtp, 1).await;
    let got = per_recipient(&settle(&smtp).await);
    assert_eq!(got.len(), 1, "only the control: {got:?}");

    // Once the provider vouches for the address (the user clicked the link),
    // the next request announces it, and the welcome goes there, link-free.
    let verified = token_vouching("mallory", Some("mallory@example.com"), None, true);
    assert_eq!(patch_me(&serve, &verified, json!({})).await, 200);
    let got = smtp.wait_for(2, Duration::from_secs(30)).await;
    let mail = got
        .iter()
        .find(|m| m.rcpt_tos == ["mallory@example.com"])
        .expect("the verified address is welcomed");
    assert!(!mail.subject.contains("evil"), "{}", mail.subject);
    assert!(!mail.text.as_deref().unwrap_or_default().contains("evil"));
    let got = per_recipient(&settle(&smtp).await);
    assert!(!got.contains_key("victim@example.com"), "{got:?}");
    assert_eq!(got.len(), 2, "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_uids_with_one_verified_address_get_one_mail() {
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
    for uid in ["first", "second"] {
        let t = token(uid, Some("shared@example.com"), None);
        assert_eq!(patch_me(&serve, &t, json!({})).await, 201);
    }
    control_mail_arrives(&serve, &smtp, 2).await;
    let got = per_recipient(&settle(&smtp).await);
    assert_eq!(
        got.get("shared@example.com").map(Vec::len),
        Some(1),
        "{got:?}"
    );
    assert_eq!(got.len(), 2, "{got:?}");
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
    wait_for_recipients_until(smtp, n, Instant::now() + Duration::from_secs(60)).await
}

async fn wait_for_recipients_until(
    smtp: &SmtpSink,
    n: usize,
    deadline: Instant,
) -> HashMap<String, Vec<String>> {
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
    let killed_at = Instant::now();
    let _worker = env.start("worker").await;
    let ready_at = Instant::now();
    // The sends in flight were claimed under leases that end JOB_LEASE_SECS
    // after the kill; the new worker's recoverer (every quarter lease) moves
    // them to retry, due after the first retry delay (at most
    // JOB_RETRY_BASE_MS), forwarded within 250 ms, and the same job's new
    // lease takes its claim over at once. The new worker's relay leads as
    // soon as it starts (the dead one's session is gone), and its consumer
    // claims the dead one's stream entries after STREAM_CLAIM_IDLE_MS, well
    // inside that. Allow a second for the sends.
    let (lease, retry_base) = (Duration::from_secs(2), Duration::from_millis(200));
    let recover_every = lease / 4;
    let forward_every = Duration::from_millis(250);
    let due = (killed_at + lease).max(ready_at)
        + recover_every
        + retry_base
        + forward_every
        + Duration::from_secs(1);
    wait_for_recipients_until(&smtp, USERS, due).await;
    eprintln!(
        "killed while sending: every user had a mail {:?} after the kill (bound {:?})",
        killed_at.elapsed(),
        due - killed_at
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_events_lists_and_replays_dead_letters() {
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
    let run = |args: &[&str]| {
        let out = env
            .command("events", 0)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, _) = run(&["dead"]);
    assert!(ok && out.contains("no dead letters on users"), "{out}");
    // A dead letter as a consumer leaves one.
    let stream = streams_adapter::stream_key(redis.prefix(), "users");
    let mut conn = redis.connection().await;
    let dead_id: String = redis::cmd("XADD")
        .arg(format!("{stream}:dead"))
        .arg("*")
        .arg(&[
            ("original_id", "1-1"),
            ("group", "welcome-mail"),
            ("consumer", "w1"),
            ("reason", "rejected: no handler today"),
            ("deliveries", "1"),
            ("type", "user.deleted"),
            ("event", "{}"),
        ])
        .query_async(&mut conn)
        .await
        .unwrap();
    let (ok, out, _) = run(&["dead", "--stream", "users"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&dead_id)
            && out.contains("rejected: no handler today")
            && out.contains("group=welcome-mail"),
        "{out}"
    );
    let (ok, out, _) = run(&["replay", &dead_id]);
    assert!(ok && out.contains("replayed"), "{out}");
    let len: u64 = redis::cmd("XLEN")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, 1, "back on the stream");
    let (ok, _, err) = run(&["replay", &dead_id]);
    assert!(!ok && err.contains("no dead letter"), "{err}");
    let (ok, out, _) = run(&["replay", "--all"]);
    assert!(ok && out.contains("replayed 0"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_mail_queue_holds_welcome_mails_until_it_is_resumed() {
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
    assert!(env.jobs(&["pause", "mail"]).await.contains("paused"));
    let limits = env
        .jobs(&["limit", "mail", "--concurrency", "2", "--rate", "100/s"])
        .await;
    assert!(
        limits.contains("concurrency 2, rate 100/1000ms"),
        "{limits}"
    );
    let serve = env.start("serve").await;
    let _worker = env.start("worker").await;
    let ada = token("ada", Some("ada@example.com"), Some("Ada"));
    assert_eq!(patch_me(&serve, &ada, json!({})).await, 201);

    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let out = env.jobs(&["list", "mail"]).await;
        if out.contains("email:welcome") {
            break out;
        }
        assert!(Instant::now() < deadline, "no pending welcome job: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(listed.contains("ada@example.com"), "{listed}");
    // The worker asks for work at least once per idle wait (1 s by default):
    // two of them pass and the paused queue still holds the mail.
    tokio::time::sleep(2 * queue_adapter::WorkerSettings::new("-", Vec::new()).idle_wait).await;
    assert!(smtp.messages().is_empty(), "nothing is sent while paused");
    let stats = env.jobs(&["stats"]).await;
    let mail = stats.lines().find(|l| l.starts_with("mail")).unwrap();
    assert!(
        mail.contains("PAUSED")
            && mail.contains("concurrency 2")
            && mail.contains("rate 100/1000ms"),
        "{stats}"
    );
    // The ops console of the local serve shows the same.
    let console = reqwest::get(format!(
        "http://127.0.0.1:{}/ops/fragments/queues",
        serve.port
    ))
    .await
    .unwrap();
    assert_eq!(console.status(), 200);
    let console = console.text().await.unwrap();
    assert!(
        console.contains("/ops/queues/mail")
            && console.contains("paused")
            && console.contains("at most 2 at once"),
        "{console}"
    );
    // Both processes' heartbeats: the console lists them as alive.
    assert!(
        console.contains("<td>serve</td>") && console.contains("<td>worker</td>"),
        "{console}"
    );

    assert!(env.jobs(&["resume", "mail"]).await.contains("resumed"));
    let got = smtp.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].rcpt_tos, ["ada@example.com"]);
    // Support finds her by address, with her welcome mail sent; the events
    // page shows the outbox relayed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = reqwest::get(format!(
            "http://127.0.0.1:{}/ops/users?q=ADA%40example.com",
            serve.port
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
        assert!(page.contains("<code>ada</code>"), "{page}");
        // The ledger marks the mail sent right after the SMTP server took it.
        if page.contains("sent ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the welcome mail is not marked sent: {page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = reqwest::get(format!("http://127.0.0.1:{}/ops/events", serve.port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(events.contains("events wait to be relayed"), "{events}");
    assert!(!env.jobs(&["stats"]).await.contains("PAUSED"));

    let bad = env.jobs_run(&["list", "mail", "--state", "sleeping"]);
    assert!(!bad.status.success());
    let bad = env.jobs_run(&["list", "mail", "--cursor", "z:1:x"]);
    assert!(
        !bad.status.success(),
        "a sorted-set cursor for the pending list"
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a cursor"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_each_new_user_gets_one_welcome_mail_across_processes() {
    let (db, smtp) = (TestDb::new().await, SmtpSink::start());
    let cluster = TestRedisCluster::start();
    let env = Env {
        db: &db,
        redis: &cluster,
        smtp: &smtp,
    };
    let serve = env.start("serve").await;
    let _worker = env.start("worker").await;
    let _second_worker = env.start("worker").await;
    for (uid, name) in [("ada", "Ada"), ("bob", "Bob"), ("cy", "Cy")] {
        let email = format!("{uid}@example.com");
        assert_eq!(
            patch_me(&serve, &token(uid, Some(&email), Some(name)), json!({})).await,
            201
        );
    }
    smtp.wait_for(3, Duration::from_secs(30)).await;
    let all = settle(&smtp).await;
    let mut to: Vec<_> = all.iter().map(|m| m.rcpt_tos.join(",")).collect();
    to.sort();
    assert_eq!(to, ["ada@example.com", "bob@example.com", "cy@example.com"]);
    let stats = env.jobs(&["stats"]).await;
    let mail = stats.lines().find(|l| l.starts_with("mail")).unwrap();
    assert_eq!(
        mail.split_whitespace().nth(6),
        Some("3"),
        "three processed: {stats}"
    );
    let listed = env.jobs(&["list", "mail", "--state", "dead"]).await;
    assert!(listed.contains("no dead jobs"), "{listed}");
}

/// `REDIS_URL=redis-sentinel://...`: serve and a worker find the primary
/// through the Sentinel, mail a new user, and after a failover (the old
/// primary's clients closed) mail the next ones, each once, without a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_sentinel_new_users_are_mailed_before_and_after_a_failover() {
    let (db, smtp) = (TestDb::new().await, SmtpSink::start());
    let ha = test_support::TestSentinel::start();
    let env = Env {
        db: &db,
        redis: &ha,
        smtp: &smtp,
    };
    let serve = env.start("serve").await;
    let _worker = env.start("worker").await;
    let sign_up = |uid: &'static str| {
        let serve = &serve;
        async move {
            let email = format!("{uid}@example.com");
            patch_me(serve, &token(uid, Some(&email), None), json!({})).await
        }
    };
    assert_eq!(sign_up("before").await, 201);
    smtp.wait_for(1, Duration::from_secs(30)).await;
    let took = ha.failover();
    // Sign-ups need Postgres only; their mail needs the relay, the consumer
    // and the worker back on the new primary: within the 10 s of
    // the promotion.
    for uid in ["after-1", "after-2"] {
        assert_eq!(sign_up(uid).await, 201);
    }
    let resumed = Instant::now();
    smtp.wait_for(3, Duration::from_secs(10)).await;
    let all = settle(&smtp).await;
    let mut to: Vec<_> = all.iter().map(|m| m.rcpt_tos.join(",")).collect();
    to.sort();
    assert_eq!(
        to,
        [
            "after-1@example.com",
            "after-2@example.com",
            "before@example.com"
        ],
        "failover took {took:?}; mails {:?} after it",
        resumed.elapsed()
    );
}

/// `DATABASE_URL` names PgBouncer in transaction mode (four server
/// connections for three processes) and `DATABASE_DIRECT_URL` the database:
/// forty users signing up eight at a time through `serve`, with two
/// workers relaying and mailing, all succeed and each gets one mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_transaction_pooler_concurrent_sign_ups_each_get_one_mail() {
    const USERS: usize = 40;
    let (db, redis, smtp) = (
        PooledDatabase::new(4).await,
        TestRedis::new().await,
        SmtpSink::start(),
    );
    let env = Env {
        db: &db,
        redis: &redis,
        smtp: &smtp,
    };
    let serve = env.start("serve").await;
    let _workers = (env.start("worker").await, env.start("worker").await);
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for wave in 0..USERS / 8 {
        let calls = (0..8).map(|i| {
            let n = wave * 8 + i;
            let client = client.clone();
            let t = token(
                &format!("pooled-{n}"),
                Some(&format!("pooled{n}@example.com")),
                Some(&format!("Pooled {n}")),
            );
            let url = format!("http://127.0.0.1:{}/api/v1/me", serve.port);
            async move {
                let created = client.patch(&url).bearer_auth(&t).json(&json!({}));
                let created = created.send().await.unwrap().status().as_u16();
                let read = client.get(&url).bearer_auth(&t).send().await.unwrap();
                (created, read.status().as_u16())
            }
        });
        statuses.extend(futures_util::future::join_all(calls).await);
    }
    assert!(
        statuses.iter().all(|s| *s == (201, 200)),
        "every sign-up and read succeeds: {statuses:?}"
    );
    wait_for_recipients(&smtp, USERS).await;
    let mails = per_recipient(&settle(&smtp).await);
    assert_eq!(mails.len(), USERS);
    assert!(
        mails.values().all(|ids| ids.len() == 1),
        "one mail each: {mails:?}"
    );
    let dead = env.jobs(&["list", "mail", "--state", "dead"]).await;
    assert!(dead.contains("no dead jobs"), "{dead}");
}

/// The TCP connections process `pid` has open to `127.0.0.1:port`
/// (its socket inodes matched against `/proc/net/tcp`).
fn connections_to(pid: u32, port: u16) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let inodes: std::collections::HashSet<String> = fds
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().into_owned();
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let remote = format!("0100007F:{port:04X}");
    // Counted by inode: /proc/net/tcp is read a page at a time while the
    // kernel's table changes, so a busy table lists a socket more than once.
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // rem_address, st (01 = established), inode.
            (cols.len() > 9 && cols[2] == remote && cols[3] == "01" && inodes.contains(cols[9]))
                .then(|| cols[9].to_owned())
        })
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// Each process keeps to `DATABASE_MAX_CONNECTIONS` and
/// `REDIS_MAX_CONNECTIONS` under sign-ups sixty-four at a time: the most
/// sockets it ever has open to Postgres and to Redis, sampled through the
/// load, are within them (and requests still succeed: they wait for a
/// connection instead of opening more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_process_keeps_to_its_connection_budgets_under_load() {
    const USERS: usize = 128;
    const PG_MAX: usize = 6;
    const REDIS_MAX: usize = 8;
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
    let start = |role: &'static str| {
        let env = &env;
        async move {
            let port = free_port();
            let child = env
                .command(role, port)
                .env("DATABASE_MAX_CONNECTIONS", PG_MAX.to_string())
                .env("REDIS_MAX_CONNECTIONS", REDIS_MAX.to_string())
                .spawn()
                .unwrap();
            let proc = Proc { child, port };
            let deadline = Instant::now() + Duration::from_secs(30);
            while !reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                assert!(Instant::now() < deadline, "app {role} never became ready");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            proc
        }
    };
    let serve = start("serve").await;
    let worker = start("worker").await;
    let pids = [serve.child.id(), worker.child.id()];
    let (pg_port, redis_port) = (
        url::Url::parse(db.url()).unwrap().port().unwrap_or(5432),
        url::Url::parse(redis.url()).unwrap().port().unwrap_or(6379),
    );
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut most = [(0, 0); 2];
            // What Redis said of its clients the first time a process was
            // over its budget: which connections they were.
            let mut over = None;
            // Bounded: the load below ends well within a minute.
            let deadline = Instant::now() + Duration::from_secs(120);
            while sampling.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                for (i, pid) in pids.iter().enumerate() {
                    let redis = connections_to(*pid, redis_port);
                    if redis > REDIS_MAX && over.is_none() {
                        over = std::process::Command::new("redis-cli")
                            .args(["-p", &redis_port.to_string(), "CLIENT", "LIST"])
                            .output()
                            .ok()
                            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
                    }
                    most[i].0 = most[i].0.max(connections_to(*pid, pg_port));
                    most[i].1 = most[i].1.max(redis);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (most, over)
        })
    };
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/api/v1/me", serve.port);
    let calls = (0..USERS).map(|n| {
        let (client, url) = (client.clone(), url.clone());
        let t = token(
            &format!("budget-{n}"),
            Some(&format!("budget{n}@example.com")),
            None,
        );
        async move {
            let created = client.patch(&url).bearer_auth(&t).json(&json!({}));
            created.send().await.unwrap().status().as_u16()
        }
    });
    let (mut pending, mut statuses): (Vec<_>, _) = (calls.collect(), Vec::new());
    while !pending.is_empty() {
        let wave: Vec<_> = pending.drain(..pending.len().min(64)).collect();
        statuses.extend(futures_util::future::join_all(wave).await);
    }
    wait_for_recipients(&smtp, USERS).await;
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let (most, over) = sampler.join().unwrap();
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    for (role, (pg, redis)) in ["serve", "worker"].iter().zip(most) {
        assert!(pg >= 1 && redis >= 1, "{role}: the sampler saw its sockets");
        assert!(pg <= PG_MAX, "{role} had {pg} Postgres connections");
        assert!(
            redis <= REDIS_MAX,
            "{role} had {redis} Redis connections; Redis's clients then:\n{}",
            over.as_deref().unwrap_or("(not listed)")
        );
    }
    drop(worker);
}

/// The ops console in a real browser (headless Chromium): signed in with
/// the operator password, a welcome mail
/// the SMTP server refuses with a 550 shows up as a dead job, Retry sends
/// it; a paused queue's pending count grows on the live overview, Resume
/// lets it go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_the_ops_console_retries_a_dead_mail_and_pauses_a_queue() {
    let (db, redis) = (TestDb::new().await, TestRedis::new().await);
    let smtp = SmtpSink::start_with(SmtpBehaviour {
        fail_first: 1,
        fail_reply: Some("550 5.1.1 No such user".into()),
        ..SmtpBehaviour::default()
    });
    let env = Env {
        db: &db,
        redis: &redis,
        smtp: &smtp,
    };
    // The console asks for the operator password (as in production).
    let hash = ops_console::hash_password(OPS_PASSWORD).unwrap();
    let serve = {
        let port = free_port();
        let child = env
            .command("serve", port)
            .env("OPS_PASSWORD_HASH", &hash)
            .env("OPS_SESSION_SECRET", "an ops session secret of 32+ chars")
            .spawn()
            .unwrap();
        let proc = Proc { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(Instant::now() < deadline, "app serve never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        proc
    };
    let _worker = env.start("worker").await;
    let ops = format!("http://127.0.0.1:{}/ops", serve.port);
    let browser = test_support::Browser::start("ops-console-retry-and-pause").await;
    browser.goto(&ops).await;
    assert!(
        browser.url().await.ends_with("/ops/login"),
        "sent to sign in"
    );
    browser
        .type_into("input[name='password']", "not the password")
        .await;
    browser.click("form.login button").await;
    browser
        .wait_for_text("That password is not right.", Duration::from_secs(5))
        .await;
    browser
        .type_into("input[name='password']", OPS_PASSWORD)
        .await;
    browser.click("form.login button").await;
    browser
        .wait_for_text("Signed in: admin operator", Duration::from_secs(5))
        .await;

    let ada = token("ada", Some("ada@example.com"), Some("Ada"));
    assert_eq!(patch_me(&serve, &ada, json!({})).await, 201);
    // The dead job appears once the worker has had the 550.
    let dead_page = format!("{ops}/queues/mail?state=dead");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        browser.goto(&dead_page).await;
        let dom = browser.source().await;
        if dom.contains("href=\"/ops/jobs/") {
            assert!(dom.contains("email:welcome"), "{dom}");
            assert!(dom.contains("550"), "the SMTP answer is shown: {dom}");
            break;
        }
        assert!(Instant::now() < deadline, "no dead job on the page: {dom}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(smtp.messages().is_empty());
    // `OPS_SCREENSHOTS=docs` refreshes the README's pictures.
    let shots = std::env::var_os("OPS_SCREENSHOTS").map(std::path::PathBuf::from);
    if let Some(dir) = &shots {
        browser.save_screenshot(dir, "ops-dead-jobs").await;
        // The job's own page, then back.
        browser.click("a[href^='/ops/jobs/']").await;
        browser
            .wait_for_text("Payload", Duration::from_secs(5))
            .await;
        browser.save_screenshot(dir, "ops-job").await;
        browser.goto(&dead_page).await;
    }
    browser.click("form[action$='/retry'] button").await;
    browser
        .wait_for_text("No dead jobs in mail", Duration::from_secs(5))
        .await;
    assert!(browser.url().await.ends_with("/ops/queues/mail?state=dead"));
    let got = smtp.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].rcpt_tos, ["ada@example.com"]);

    // Pause from the overview; a new user's mail waits, and the overview
    // shows it without a reload (it refreshes every 5 s).
    browser.goto(&ops).await;
    browser
        .click("form[action='/ops/queues/mail/pause'] button")
        .await;
    browser
        .wait_for_text("paused", Duration::from_secs(5))
        .await;
    let bob = token("bob", Some("bob@example.com"), Some("Bob"));
    assert_eq!(patch_me(&serve, &bob, json!({})).await, 201);
    browser
        .wait_for_text("data-pending=\"mail\">1<", Duration::from_secs(30))
        .await;
    assert_eq!(smtp.messages().len(), 1, "nothing sent while paused");
    if let Some(dir) = &shots {
        browser.save_screenshot(dir, "ops-overview").await;
    }
    browser
        .click("form[action='/ops/queues/mail/resume'] button")
        .await;
    browser
        .wait_for_text("action=\"/ops/queues/mail/pause\"", Duration::from_secs(5))
        .await;
    smtp.wait_for(2, Duration::from_secs(30)).await;

    // A dead letter of the users stream (an event type no consumer knows,
    // as a group leaves it), replayed from the events page.
    use fred::prelude::*;
    let client = streams_adapter::connect(redis.url(), Duration::from_secs(5))
        .await
        .unwrap();
    let stream = streams_adapter::stream_key(redis.prefix(), "users");
    let event = json!({
        "v": 1,
        "id": uuid::Uuid::now_v7(),
        "type": "user.future",
        "occurred_at": "2026-12-06T00:00:00Z",
        "data": {},
    })
    .to_string();
    let fields = vec![
        ("type", "user.future"),
        ("event", event.as_str()),
        ("original_id", "1-0"),
        ("group", "welcome-mail"),
        ("consumer", "c1"),
        ("reason", "unknown to this consumer"),
        ("deliveries", "5"),
    ];
    let _: String = client
        .xadd(format!("{stream}:dead"), false, None, "*", fields)
        .await
        .unwrap();
    browser.goto(&format!("{ops}/events")).await;
    browser
        .wait_for_text("unknown to this consumer", Duration::from_secs(5))
        .await;
    browser.click("form[action*='/replay/'] button").await;
    // Back on the page at once; the groups would take the replayed entry
    // back to the dead letters only after 5 deliveries of 1 s claim idle.
    browser
        .wait_for_text("No dead letters on users", Duration::from_secs(3))
        .await;
    let entries: Vec<(String, HashMap<String, String>)> =
        client.xrange(&stream, "-", "+", None).await.unwrap();
    assert!(
        entries
            .iter()
            .any(|(_, f)| f.get("type").map(String::as_str) == Some("user.future")),
        "the dead letter is back on its stream"
    );
}

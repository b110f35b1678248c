//! Fault scenarios 1, 3 and 5, and what every fault scenario shares.
//! Faults 2, 4 and 6 have their own modules. (Over 400 lines on purpose:
//! the shared setup and three short scenarios read best together.)

use crate::Outcome;
use crate::auth::{Keys, PROJECT};
use crate::tools::{self, Proc};
use ports::{JobQueue as _, NewJob};
use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};
use test_support::{SmtpSink, TestDb, TestRedis};

/// Settings for chaos apps: production mode with real RS256 tokens, short
/// leases and claim times so recoveries happen within the run.
pub(crate) fn env(
    db_url: &str,
    redis_url: &str,
    prefix: &str,
    keys: &Keys,
    smtp: Option<&SmtpSink>,
) -> Vec<(&'static str, String)> {
    let mut e = vec![
        ("APP_ENV", "production".into()),
        ("DATABASE_URL", db_url.into()),
        ("DATABASE_MAX_CONNECTIONS", "8".into()),
        ("REDIS_URL", redis_url.into()),
        ("REDIS_KEY_PREFIX", prefix.into()),
        ("FIREBASE_PROJECT_ID", PROJECT.into()),
        ("FIREBASE_KEYS_URL", keys.url.clone()),
        ("SSL_CERT_FILE", keys.ca_file()),
        ("CURSOR_SECRET", "chaos-cursor-secret-0123456789".into()),
        ("MIGRATE_ON_START", "false".into()),
        ("RATE_LIMIT_PER_USER", "0".into()),
        ("RATE_LIMIT_PER_IP", "0".into()),
        ("JOB_LEASE_SECS", "3".into()),
        ("JOB_RETRY_BASE_MS", "300".into()),
        ("STREAM_CLAIM_IDLE_MS", "1500".into()),
        ("SHUTDOWN_TIMEOUT_SECS", "8".into()),
        ("MAIL_FROM", "Chaos <chaos@trellis.example>".into()),
    ];
    if let Some(s) = smtp {
        e.push(("SMTP_URL", s.url()));
    }
    e
}

pub(crate) async fn patch_me(
    client: &reqwest::Client,
    port: u16,
    token: &str,
) -> Result<u16, reqwest::Error> {
    client
        .patch(format!("http://127.0.0.1:{port}/api/v1/me"))
        .bearer_auth(token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .map(|r| r.status().as_u16())
}

/// Counts mails per recipient.
fn per_recipient(smtp: &SmtpSink) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for mail in smtp.messages() {
        if let Some(r) = mail.rcpt_tos.first() {
            *m.entry(r.clone()).or_insert(0) += 1;
        }
    }
    m
}

/// Waits until every `expected` recipient has mail (or `limit`), then a
/// little longer so that a second copy has the chance to show itself.
pub(crate) async fn wait_mails(
    smtp: &SmtpSink,
    expected: &[String],
    limit: Duration,
) -> HashMap<String, usize> {
    let start = Instant::now();
    loop {
        let got = per_recipient(smtp);
        if expected.iter().all(|e| got.contains_key(e)) || start.elapsed() > limit {
            tokio::time::sleep(Duration::from_secs(2)).await;
            return per_recipient(smtp);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Mails to the `expected` recipients: arrived, lost, and repeats.
pub(crate) fn account(o: &mut Outcome, expected: &[String], got: &HashMap<String, usize>) {
    o.processed = expected.iter().filter(|e| got.contains_key(*e)).count();
    o.lost = expected.len() - o.processed;
    o.duplicated = got.values().map(|n| n.saturating_sub(1)).sum();
}

/// A problem+json answer with a Retry-After header (what a 503 must be).
pub(crate) fn problem_with_retry_after(r: &reqwest::Response) -> bool {
    let problem = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/problem+json"));
    problem && r.headers().contains_key("retry-after")
}

pub(crate) fn kill9(p: &mut Proc) {
    let _ = p.child.kill();
    let _ = p.child.wait();
}

/// Scenario 1: Worker processes SIGKILLed twice while 10,000 jobs run.
pub(crate) async fn killed_workers(quick: bool) -> anyhow::Result<Outcome> {
    const CONCURRENCY: usize = 16;
    let jobs: u64 = if quick { 2_000 } else { 10_000 };
    let redis = TestRedis::new().await;
    let worker_bin = tools::app_binary()?.with_file_name("queue-crash-worker");
    anyhow::ensure!(
        worker_bin.exists(),
        "{} is missing: build the queue-adapter binaries",
        worker_bin.display()
    );
    let spawn = || -> anyhow::Result<Proc> {
        let child = Command::new(&worker_bin)
            .args([
                redis.url(),
                redis.prefix(),
                &CONCURRENCY.to_string(),
                "1000",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        Ok(Proc { child, port: 0 })
    };
    let pool = queue_adapter::build_pool(&queue_adapter::RedisSettings::new(redis.url()))?;
    let queue =
        queue_adapter::RedisJobQueue::new(pool, queue_adapter::QueueSettings::new(redis.prefix()));
    // Every job is queued before the workers start, so the kills land while
    // they work through the backlog (enqueued one by one, the jobs would
    // run as fast as they arrive and be over before the first kill).
    for n in 0..jobs {
        queue
            .enqueue(NewJob::new(
                "crash:test",
                1,
                &serde_json::json!({"n": n, "sleep_ms": 5}),
            )?)
            .await?;
    }
    let mut a = spawn()?;
    let _b = spawn()?;
    let mut conn = redis.connection().await;
    let counts = |c: &mut redis::aio::MultiplexedConnection| {
        let (runs, done) = (
            format!("{}runs", redis.prefix()),
            format!("{}done", redis.prefix()),
        );
        let mut c = c.clone();
        async move {
            // A failed read counts nothing (never a duplicate hidden as 0):
            // the caller's deadline bounds the wait, and the final read
            // must succeed.
            let runs: Option<u64> = redis::cmd("GET").arg(runs).query_async(&mut c).await?;
            let done: u64 = redis::cmd("SCARD").arg(done).query_async(&mut c).await?;
            Ok::<_, redis::RedisError>((runs.unwrap_or(0), done))
        }
    };
    let mut kills = 0;
    for threshold in [jobs / 4, jobs * 3 / 5] {
        let deadline = Instant::now() + Duration::from_secs(120);
        while counts(&mut conn).await.map_or(0, |c| c.1) < threshold && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (_, done) = counts(&mut conn).await?;
        anyhow::ensure!(
            a.child.try_wait()?.is_none() && done < jobs,
            "the kill at {threshold} jobs would not interrupt a running worker ({done} done)"
        );
        kill9(&mut a);
        kills += 1;
        a = spawn()?;
    }
    let deadline = Instant::now() + Duration::from_secs(if quick { 60 } else { 180 });
    while counts(&mut conn).await.map_or(0, |c| c.1) < jobs && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (runs, done) = counts(&mut conn).await?;
    anyhow::ensure!(runs >= done, "{runs} runs recorded for {done} jobs done");
    let stats = queue.stats("default").await?;
    // At-least-once: a job runs again only if the killed worker held it.
    // A worker holds a job's lease and its slot from the fetch until its
    // completion is recorded (completions are batched, but each job keeps
    // its slot until its batch is written), so a SIGKILL strands at most
    // CONCURRENCY jobs, each of which then runs once more.
    let bound = kills * CONCURRENCY;
    let o = Outcome {
        sent: jobs as usize,
        processed: done as usize,
        lost: (jobs - done.min(jobs)) as usize,
        duplicated: runs.saturating_sub(done) as usize,
        allowed_duplicates: bound,
        notes: vec![format!(
            "{kills} SIGKILLs; duplicates allowed up to {bound} ({kills} kills x {CONCURRENCY} jobs a worker holds at once); dead set {}",
            stats.dead
        )],
        ..Outcome::default()
    };
    Ok(o)
}

/// What the load of scenario 3 saw.
#[derive(Default)]
struct PgLoad {
    /// Answers by status (or transport error).
    answers: HashMap<String, usize>,
    /// 503s without problem+json or without Retry-After.
    bare_503: usize,
}

/// Scenario 3: Every connection the app holds to Postgres terminated, twice,
/// under load (and only those: the database is shared with other tests).
pub(crate) async fn postgres_killed(quick: bool) -> anyhow::Result<Outcome> {
    let keys = Keys::start().await?;
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    // Its own application_name marks the app's connections for the kill.
    let app_name = format!("chaos-pg-{}", test_support::unique_suffix());
    let sep = if db.url().contains('?') { '&' } else { '?' };
    let db_url = format!("{}{sep}application_name={app_name}", db.url());
    let env = env(&db_url, redis.url(), redis.prefix(), &keys, None);
    let (mut serve, _) = tools::start_app("serve", &env).await?;
    let client = tools::client(Duration::from_secs(5))?;
    let users: Vec<(String, Option<String>)> = (0..16)
        .map(|i| (format!("pg-user-{i}"), Some(format!("pg{i}@chaos.example"))))
        .collect();
    let tokens = keys.tokens(&users)?;
    for t in &tokens {
        anyhow::ensure!(patch_me(&client, serve.port, t).await? == 201);
    }
    let secs = if quick { 4 } else { 8 };
    let stop_at = Instant::now() + Duration::from_secs(secs);
    let port = serve.port;
    let load: Vec<_> = tokens
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, t)| {
            let c = client.clone();
            tokio::spawn(async move {
                let mut seen = PgLoad::default();
                let mut n = 0_u64;
                while Instant::now() < stop_at {
                    n += 1;
                    let r = if (i as u64 + n).is_multiple_of(3) {
                        c.patch(format!("http://127.0.0.1:{port}/api/v1/me"))
                            .bearer_auth(&t)
                            .json(&serde_json::json!({"display_name": format!("n{n}")}))
                            .send()
                            .await
                    } else {
                        c.get(format!("http://127.0.0.1:{port}/api/v1/me"))
                            .bearer_auth(&t)
                            .send()
                            .await
                    };
                    let key = match r {
                        Ok(r) => {
                            if r.status() == 503 && !problem_with_retry_after(&r) {
                                seen.bare_503 += 1;
                            }
                            r.status().as_u16().to_string()
                        }
                        Err(e) => format!("transport error: {e}"),
                    };
                    *seen.answers.entry(key).or_default() += 1;
                }
                seen
            })
        })
        .collect();
    let kill_sql = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{app_name}' AND pid <> pg_backend_pid()"
    );
    let base = db.url().split('?').next().unwrap_or_default().to_owned();
    let mut killed = Vec::new();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(secs / 3)).await;
        let out = tools::run_for(
            Command::new("psql").args([&base, "-Atc", &kill_sql]),
            Duration::from_secs(10),
        )?;
        killed.push(out.trim().parse::<usize>().unwrap_or(0));
    }
    let mut totals: HashMap<String, usize> = HashMap::new();
    let mut bare_503 = 0;
    for l in load {
        let seen = l.await?;
        bare_503 += seen.bare_503;
        for (k, v) in seen.answers {
            *totals.entry(k).or_default() += v;
        }
    }
    let mut o = Outcome::default();
    for (status, n) in &totals {
        o.sent += n;
        match status.as_str() {
            "200" => o.processed += n,
            "503" => {}
            // A 500, another status, or no answer at all.
            _ => o.errors += n,
        }
    }
    if bare_503 > 0 {
        o.errors += bare_503;
        o.notes.push(format!(
            "{bare_503} 503s without problem+json and Retry-After"
        ));
    }
    // The fault really happened: each round terminated the app's connections.
    if killed.contains(&0) {
        o.errors += 1;
        o.notes.push(format!(
            "a round terminated no connection ({killed:?}): the fault did not happen"
        ));
    }
    // Recovered, with no restart: within 5 s, 32 requests in a row succeed.
    // The pool checks a connection only by using it (RecyclingMethod::Fast),
    // so each dead idle connection costs one more clean 503 on its first use
    // after the load; at most as many as the app holds (8 pooled + 4
    // pipelined read connections).
    let (mut streak, mut stale_503s, mut attempts) = (0, 0, 0);
    let recovery = Instant::now();
    while streak < 32 && recovery.elapsed() < Duration::from_secs(5) {
        let t = &tokens[attempts % tokens.len()];
        attempts += 1;
        let r = if attempts % 2 == 0 {
            client
                .patch(format!("http://127.0.0.1:{port}/api/v1/me"))
                .bearer_auth(t)
                .json(&serde_json::json!({"display_name": format!("r{attempts}")}))
                .send()
                .await
        } else {
            client
                .get(format!("http://127.0.0.1:{port}/api/v1/me"))
                .bearer_auth(t)
                .send()
                .await
        };
        match r {
            Ok(r) if r.status() == 200 => streak += 1,
            Ok(r) if r.status() == 503 && problem_with_retry_after(&r) => {
                streak = 0;
                stale_503s += 1;
            }
            Ok(r) => {
                streak = 0;
                o.errors += 1;
                o.notes
                    .push(format!("after the kills a request answered {}", r.status()));
            }
            Err(e) => {
                streak = 0;
                o.errors += 1;
                o.notes
                    .push(format!("after the kills a request failed: {e}"));
            }
        }
    }
    if streak < 32 || stale_503s > 12 {
        o.errors += 1;
        o.notes.push(format!(
            "not recovered: {streak} successes in a row after {attempts} requests, {stale_503s} 503s"
        ));
    }
    if serve.child.try_wait()?.is_some() {
        o.errors += 1;
        o.notes.push("the app process died".into());
    }
    let mut summary: Vec<String> = totals.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    summary.sort();
    o.notes.push(format!(
        "{} + {} of the app's connections terminated; answers {}; every 503 problem+json with Retry-After: {}; recovered in {} ms ({stale_503s} stale connections answered 503 on first use)",
        killed[0],
        killed[1],
        summary.join(", "),
        bare_503 == 0,
        recovery.elapsed().as_millis()
    ));
    kill9(&mut serve);
    Ok(o)
}

/// `mail_sent_total{outcome="failed"}` from a process's `/metrics`.
async fn failed_mail_sends(client: &reqwest::Client, port: u16) -> anyhow::Result<u64> {
    let n = tools::metric(client, port, "mail_sent_total", "outcome=\"failed\"").await?;
    Ok(n as u64)
}

/// Scenario 5: The SMTP server unreachable for a while: mail is late, not lost.
pub(crate) async fn smtp_down(quick: bool) -> anyhow::Result<Outcome> {
    let keys = Keys::start().await?;
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    let mut smtp = SmtpSink::start();
    smtp.stop();
    let env = env(db.url(), redis.url(), redis.prefix(), &keys, Some(&smtp));
    let (serve, _) = tools::start_app("serve", &env).await?;
    let (worker, _) = tools::start_app("worker", &env).await?;
    let users = 20;
    let client = tools::client(Duration::from_secs(10))?;
    let mut expected = Vec::new();
    for i in 0..users {
        let email = format!("late{i}@chaos.example");
        let token = keys.token(&format!("smtp-user-{i}"), Some(&email), Some("Late User"))?;
        anyhow::ensure!(patch_me(&client, serve.port, &token).await? == 201);
        expected.push(email);
    }
    let outage = Duration::from_secs(if quick { 15 } else { 60 });
    tokio::time::sleep(outage).await;
    let during = smtp.messages().len();
    // The fault really happened: the worker tried to send and failed.
    let failed_sends = failed_mail_sends(&client, worker.port).await;
    smtp.resume();
    let got = wait_mails(&smtp, &expected, Duration::from_secs(90)).await;
    let mut o = Outcome {
        sent: users,
        // A user gets exactly one welcome mail, however late.
        allowed_duplicates: 0,
        ..Outcome::default()
    };
    account(&mut o, &expected, &got);
    if during != 0 {
        o.errors += 1;
        o.notes.push(format!(
            "{during} mails arrived while the SMTP server was down"
        ));
    }
    match failed_sends {
        Ok(n) if n >= users as u64 => o.notes.push(format!(
            "SMTP down for {} s: {n} failed send attempts, then retried with backoff",
            outage.as_secs()
        )),
        Ok(n) => {
            o.errors += 1;
            o.notes.push(format!(
                "only {n} failed send attempts for {users} mails while SMTP was down: the fault did not happen"
            ));
        }
        Err(e) => {
            o.errors += 1;
            o.notes.push(format!("the worker's /metrics: {e:#}"));
        }
    }
    drop((serve, worker));
    Ok(o)
}

//! Fault scenarios 1 to 6.

use crate::Outcome;
use crate::auth::{Keys, PROJECT};
use crate::tools::{self, Proc};
use futures_util::{SinkExt as _, StreamExt as _};
use ports::{JobQueue as _, NewJob};
use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};
use test_support::{RedisProcess, SmtpSink, TestDb, TestRedis};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// Settings for chaos apps: production mode with real RS256 tokens, short
/// leases and claim times so recoveries happen within the run.
fn env(
    db: &TestDb,
    redis_url: &str,
    prefix: &str,
    keys: &Keys,
    smtp: Option<&SmtpSink>,
) -> Vec<(&'static str, String)> {
    let mut e = vec![
        ("APP_ENV", "production".into()),
        ("DATABASE_URL", db.url().into()),
        ("DATABASE_MAX_CONNECTIONS", "8".into()),
        ("REDIS_URL", redis_url.into()),
        ("REDIS_KEY_PREFIX", prefix.into()),
        ("FIREBASE_PROJECT_ID", PROJECT.into()),
        ("FIREBASE_KEYS_URL", keys.url.clone()),
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

async fn patch_me(client: &reqwest::Client, port: u16, token: &str) -> Result<u16, reqwest::Error> {
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

/// Waits until `n` distinct recipients have mail (or `limit`).
async fn wait_mails(smtp: &SmtpSink, n: usize, limit: Duration) -> HashMap<String, usize> {
    let start = Instant::now();
    loop {
        let got = per_recipient(smtp);
        if got.len() >= n || start.elapsed() > limit {
            // Give a repeat the chance to show itself.
            tokio::time::sleep(Duration::from_secs(2)).await;
            return per_recipient(smtp);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn account(o: &mut Outcome, expected: &[String], got: &HashMap<String, usize>) {
    o.processed = expected.iter().filter(|e| got.contains_key(*e)).count();
    o.lost = expected.len() - o.processed;
    o.duplicated = got.values().map(|n| n.saturating_sub(1)).sum();
}

fn kill9(p: &mut Proc) {
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
    let mut a = spawn()?;
    let _b = spawn()?;
    for n in 0..jobs {
        queue
            .enqueue(NewJob::new(
                "crash:test",
                1,
                &serde_json::json!({"n": n, "sleep_ms": 1}),
            )?)
            .await?;
    }
    let mut conn = redis.connection().await;
    let counts = |c: &mut redis::aio::MultiplexedConnection| {
        let (runs, done) = (
            format!("{}runs", redis.prefix()),
            format!("{}done", redis.prefix()),
        );
        let mut c = c.clone();
        async move {
            let runs: Option<u64> = redis::cmd("GET")
                .arg(runs)
                .query_async(&mut c)
                .await
                .unwrap_or(None);
            let done: u64 = redis::cmd("SCARD")
                .arg(done)
                .query_async(&mut c)
                .await
                .unwrap_or(0);
            (runs.unwrap_or(0), done)
        }
    };
    let mut kills = 0;
    for threshold in [jobs / 4, jobs * 3 / 5] {
        let deadline = Instant::now() + Duration::from_secs(120);
        while counts(&mut conn).await.1 < threshold && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        kill9(&mut a);
        kills += 1;
        a = spawn()?;
    }
    let deadline = Instant::now() + Duration::from_secs(if quick { 60 } else { 180 });
    while counts(&mut conn).await.1 < jobs && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (runs, done) = counts(&mut conn).await;
    let stats = queue.stats("default").await?;
    let mut o = Outcome {
        sent: jobs as usize,
        processed: done as usize,
        lost: (jobs - done.min(jobs)) as usize,
        duplicated: (runs - done) as usize,
        ..Outcome::default()
    };
    if o.duplicated > kills * CONCURRENCY {
        o.errors += 1;
        o.notes.push(format!(
            "{} duplicates exceed the {} jobs in flight at the kills",
            o.duplicated,
            kills * CONCURRENCY
        ));
    }
    o.notes
        .push(format!("{kills} SIGKILLs; dead set {}", stats.dead));
    Ok(o)
}

/// Scenario 2: Redis (with AOF, as in production) restarted while users sign up.
pub(crate) async fn redis_restart(quick: bool) -> anyhow::Result<Outcome> {
    let keys = Keys::start().await?;
    let db = TestDb::new().await;
    let mut redis = RedisProcess::start_persistent();
    let smtp = SmtpSink::start();
    let env = env(&db, &redis.url(), "chaos:", &keys, Some(&smtp));
    let (serve, _) = tools::start_app("serve", &env).await?;
    let (worker, _) = tools::start_app("worker", &env).await?;
    let users = if quick { 60 } else { 300 };
    let client = reqwest::Client::new();
    let mut o = Outcome {
        sent: users,
        ..Outcome::default()
    };
    let mut expected = Vec::new();
    let down_at = users / 3;
    let up_at = users * 2 / 3;
    for i in 0..users {
        if i == down_at {
            redis.stop();
            // What needs Redis says so at once, with a problem, not a hang.
            let t = Instant::now();
            let r = client
                .get(format!("http://127.0.0.1:{}/readyz", serve.port))
                .send()
                .await?;
            let problem = r
                .headers()
                .get("content-type")
                .is_some_and(|v| v == "application/problem+json");
            if r.status() != 503 || !problem || t.elapsed() > Duration::from_secs(2) {
                o.errors += 1;
                o.notes.push(format!(
                    "/readyz with Redis down: {} in {:?}",
                    r.status(),
                    t.elapsed()
                ));
            }
        }
        if i == up_at {
            redis.resume();
        }
        let email = format!("r{i}@chaos.example");
        let token = keys.token(&format!("redis-user-{i}"), Some(&email), None)?;
        match patch_me(&client, serve.port, &token).await {
            Ok(201) => expected.push(email),
            Ok(s) => {
                o.errors += 1;
                o.notes.push(format!("a sign-up answered {s}"));
            }
            Err(e) => {
                o.errors += 1;
                o.notes.push(format!("a sign-up failed: {e}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = wait_mails(
        &smtp,
        expected.len(),
        Duration::from_secs(if quick { 60 } else { 120 }),
    )
    .await;
    account(&mut o, &expected, &got);
    let ready = client
        .get(format!("http://127.0.0.1:{}/readyz", serve.port))
        .send()
        .await?
        .status();
    if ready != 200 {
        o.errors += 1;
        o.notes.push(format!(
            "/readyz after the restart: {ready} (no app restart allowed)"
        ));
    }
    o.notes
        .push("sign-ups never need Redis: the outbox holds their events".into());
    drop((serve, worker));
    Ok(o)
}

/// Scenario 3: Every Postgres connection terminated, twice, under load.
pub(crate) async fn postgres_killed(quick: bool) -> anyhow::Result<Outcome> {
    let keys = Keys::start().await?;
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    let env = env(&db, redis.url(), redis.prefix(), &keys, None);
    let (mut serve, _) = tools::start_app("serve", &env).await?;
    let client = reqwest::Client::new();
    let mut tokens = Vec::new();
    for i in 0..16 {
        let t = keys.token(
            &format!("pg-user-{i}"),
            Some(&format!("pg{i}@chaos.example")),
            None,
        )?;
        anyhow::ensure!(patch_me(&client, serve.port, &t).await? == 201);
        tokens.push(t);
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
                let mut statuses: HashMap<String, usize> = HashMap::new();
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
                        Ok(r) => r.status().as_u16().to_string(),
                        Err(e) => format!("transport error: {e}"),
                    };
                    *statuses.entry(key).or_default() += 1;
                }
                statuses
            })
        })
        .collect();
    let kill_sql = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND application_name = ''";
    let base = db.url().split('?').next().unwrap_or_default().to_owned();
    let mut killed = 0;
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(secs / 3)).await;
        let out = tools::run(Command::new("psql").args([&base, "-Atc", kill_sql]))?;
        killed += out.trim().parse::<usize>().unwrap_or(0);
    }
    let mut totals: HashMap<String, usize> = HashMap::new();
    for l in load {
        for (k, v) in l.await? {
            *totals.entry(k).or_default() += v;
        }
    }
    let mut o = Outcome::default();
    for (status, n) in &totals {
        o.sent += n;
        match status.as_str() {
            "200" => o.processed += n,
            "503" => {}
            _ => o.errors += n,
        }
    }
    // Recovered: every request succeeds again, with no restart.
    for t in tokens.iter().take(8) {
        let s = client
            .get(format!("http://127.0.0.1:{port}/api/v1/me"))
            .bearer_auth(t)
            .send()
            .await?
            .status();
        if s != 200 {
            o.errors += 1;
            o.notes
                .push(format!("after the kills GET /me answered {s}"));
        }
    }
    if serve.child.try_wait()?.is_some() {
        o.errors += 1;
        o.notes.push("the app process died".into());
    }
    let mut summary: Vec<String> = totals.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    summary.sort();
    o.notes.push(format!(
        "{killed} connections terminated; answers {}",
        summary.join(", ")
    ));
    kill9(&mut serve);
    Ok(o)
}

/// Scenario 4: SIGTERM to `serve` under HTTP load (one connection per request) and
/// with a WebSocket open.
pub(crate) async fn sigterm_under_load(quick: bool) -> anyhow::Result<Outcome> {
    let keys = Keys::start().await?;
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    let mut env = env(&db, redis.url(), redis.prefix(), &keys, None);
    // The access log tells what the server answered, to compare with what
    // the clients received.
    let log = std::env::temp_dir().join(format!("chaos-sigterm-{}.log", std::process::id()));
    env.push(("HARNESS_LOG_FILE", log.display().to_string()));
    env.push(("LOG_FORMAT", "json".into()));
    env.push(("RUST_LOG", "warn,access=info".into()));
    let (mut serve, _) = tools::start_app("serve", &env).await?;
    let port = serve.port;
    let token = keys.token("sigterm-user", Some("s@chaos.example"), None)?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    anyhow::ensure!(patch_me(&client, port, &token).await? == 201);
    let mut req = format!("ws://127.0.0.1:{port}/ws").into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;

    let run_for = Duration::from_secs(if quick { 3 } else { 5 });
    let stop_at = Instant::now() + run_for;
    let load: Vec<_> = (0..16)
        .map(|_| {
            let (c, t) = (client.clone(), token.clone());
            tokio::spawn(async move {
                let (mut ok, mut refused, mut broken, mut other) = (0, 0, 0, 0);
                while Instant::now() < stop_at {
                    match c
                        .get(format!("http://127.0.0.1:{port}/api/v1/me"))
                        .bearer_auth(&t)
                        .header("connection", "close")
                        .send()
                        .await
                    {
                        Ok(r) if r.status() == 200 => match r.bytes().await {
                            Ok(_) => ok += 1,
                            Err(_) => broken += 1,
                        },
                        Ok(_) => other += 1,
                        Err(e) if e.is_connect() => {
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(_) => broken += 1,
                    }
                }
                (ok, refused, broken, other)
            })
        })
        .collect();
    tokio::time::sleep(run_for / 3).await;
    let term_at = Instant::now();
    Command::new("kill")
        .args(["-TERM", &serve.child.id().to_string()])
        .status()?;
    let exit = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(s)) = serve.child.try_wait() {
                return (Some(s), term_at.elapsed(), serve);
            }
            if Instant::now() > deadline {
                return (None, term_at.elapsed(), serve);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(f)))) => return Some(u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .ok()
    .flatten();
    let mut o = Outcome::default();
    let (mut refused, mut broken, mut other) = (0, 0, 0);
    for l in load {
        let (a, b, c, d) = l.await?;
        o.processed += a;
        refused += b;
        broken += c;
        other += d;
    }
    o.sent = o.processed + broken + other;
    o.errors = other;
    let exit = exit.await?;
    match exit.0 {
        Some(s) if s.success() => o.notes.push(format!(
            "exited 0 {:.2} s after SIGTERM",
            exit.1.as_secs_f64()
        )),
        other => {
            o.errors += 1;
            o.notes.push(format!("exit: {other:?}"));
        }
    }
    if close != Some(1001) {
        o.errors += 1;
        o.notes
            .push(format!("WebSocket close code {close:?}, expected 1001"));
    } else {
        o.notes.push("WebSocket closed with 1001".into());
    }
    // Every 200 the server wrote must have reached its client; a request
    // reset without one never reached a handler (it sat in the kernel's
    // accept queue when the listener closed) and is safe to retry.
    let access_log = std::fs::read_to_string(&log)?;
    let _ = std::fs::remove_file(&log);
    let served = access_log
        .lines()
        .filter(|l| {
            l.contains("\"request served\"")
                && l.contains("\"/api/v1/me\"")
                && l.contains("\"status\":200")
        })
        .count(); // the PATCH above answered 201: GETs only
    o.lost = served.saturating_sub(o.processed);
    o.notes.push(format!(
        "server answered {served} GETs, clients received {}",
        o.processed
    ));
    o.notes.push(format!(
        "{refused} refused after the listener closed, {broken} reset in the accept queue (never handled)"
    ));
    if served < o.processed {
        o.errors += 1;
        o.notes.push(
            "clients received more answers than the log shows: the access log lost lines".into(),
        );
    }
    let _ = ws.send(Message::Close(None)).await;
    Ok(o)
}

/// Scenario 5: The SMTP server unreachable for a while: mail is late, not lost.
pub(crate) async fn smtp_down(quick: bool) -> anyhow::Result<Outcome> {
    let keys = Keys::start().await?;
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    let mut smtp = SmtpSink::start();
    smtp.stop();
    let env = env(&db, redis.url(), redis.prefix(), &keys, Some(&smtp));
    let (serve, _) = tools::start_app("serve", &env).await?;
    let (worker, _) = tools::start_app("worker", &env).await?;
    let users = 20;
    let client = reqwest::Client::new();
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
    smtp.resume();
    let got = wait_mails(&smtp, users, Duration::from_secs(90)).await;
    let mut o = Outcome {
        sent: users,
        ..Outcome::default()
    };
    account(&mut o, &expected, &got);
    if during != 0 {
        o.errors += 1;
    }
    o.notes.push(format!(
        "SMTP down for {} s; retried with backoff",
        outage.as_secs()
    ));
    drop((serve, worker));
    Ok(o)
}

/// Scenario 6: A client that never reads and one that floods 10,000 frames: others
/// stay served, memory stays bounded.
pub(crate) async fn websocket_abuse(quick: bool) -> anyhow::Result<Outcome> {
    let keys = Keys::start().await?;
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    let env = env(&db, redis.url(), redis.prefix(), &keys, None);
    let (serve, _) = tools::start_app("serve", &env).await?;
    let url = format!("ws://127.0.0.1:{}/ws", serve.port);
    let connect = |uid: &str| -> anyhow::Result<_> {
        let mut req = url.clone().into_client_request()?;
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", keys.token(uid, None, None)?).parse()?,
        );
        Ok(req)
    };
    let (mut normal, _) = tokio_tungstenite::connect_async(connect("normal")?).await?;
    let (mut slow, _) = tokio_tungstenite::connect_async(connect("slow")?).await?;
    let (mut flood, _) = tokio_tungstenite::connect_async(connect("flood")?).await?;
    for ws in [&mut normal, &mut slow] {
        ws.send(Message::text(
            serde_json::json!({"type": "subscribe", "data": {"topic": "public:feed"}}).to_string(),
        ))
        .await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = tools::rss_kib(serve.child.id())?;

    // The flood: 10,000 frames, never reading a reply.
    let frames = 10_000;
    let flooding = tokio::spawn(async move {
        let mut sent = 0;
        for i in 0..frames {
            let frame = if i % 2 == 0 {
                serde_json::json!({"type": "echo", "id": i.to_string(), "data": "x".repeat(512)})
                    .to_string()
            } else {
                serde_json::json!({"type": format!("junk-{i}")}).to_string()
            };
            if tokio::time::timeout(Duration::from_secs(5), flood.send(Message::text(frame)))
                .await
                .map_or(true, |r| r.is_err())
            {
                break;
            }
            sent += 1;
        }
        (sent, flood)
    });
    // Broadcasts the slow client never drains.
    let fan_client = streams_adapter::connect(redis.url(), Duration::from_secs(5)).await?;
    let fanout = streams_adapter::RedisFanout::new(&fan_client, redis.prefix())?;
    let broadcasts = if quick { 1_500 } else { 4_000 };
    let pad = "p".repeat(16 * 1024);
    let publisher = tokio::spawn(async move {
        for i in 0..broadcasts {
            let m = ports::FanoutMessage {
                origin: "chaos".into(),
                audience: ports::Audience::Topic("public:feed".into()),
                notification: ports::Notification::new(
                    "feed",
                    serde_json::json!({"i": i, "pad": pad}),
                ),
            };
            use ports::Fanout as _;
            let _ = fanout.publish(&m).await;
            if i % 20 == 19 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    // Meanwhile the normal client reads its feed all the time (a reader
    // task, as a real app does) and times echo round trips.
    let (mut normal_tx, mut normal_rx) = normal.split();
    let feed_seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (reply_tx, mut replies) = tokio::sync::mpsc::unbounded_channel::<String>();
    let counter = feed_seen.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(m)) = normal_rx.next().await {
            let Message::Text(t) = m else { continue };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&t) else {
                continue;
            };
            if v["type"] == "feed" {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            } else if let Some(id) = v["id"].as_str() {
                let _ = reply_tx.send(id.to_owned());
            }
        }
    });
    let mut worst = Duration::ZERO;
    let mut probes = 0;
    let until = Instant::now() + Duration::from_secs(if quick { 6 } else { 10 });
    while Instant::now() < until {
        let t = Instant::now();
        let id = format!("probe-{probes}");
        normal_tx
            .send(Message::text(
                serde_json::json!({"type": "echo", "id": id}).to_string(),
            ))
            .await?;
        probes += 1;
        loop {
            match tokio::time::timeout(Duration::from_secs(5), replies.recv()).await {
                Ok(Some(got)) if got == id => break,
                Ok(Some(_)) => continue,
                _ => anyhow::bail!("the normal client stopped being served"),
            }
        }
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    reader.abort();
    let feed = feed_seen.load(std::sync::atomic::Ordering::Relaxed);
    publisher.await?;
    let (flooded, _flood) = flooding.await?;
    let rss_after = tools::rss_kib(serve.child.id())?;
    let growth_mib = rss_after.saturating_sub(rss_before) as f64 / 1024.0;
    let mut o = Outcome {
        sent: flooded,
        processed: probes,
        ..Outcome::default()
    };
    if worst > Duration::from_secs(1) {
        o.errors += 1;
    }
    if growth_mib > 64.0 {
        o.errors += 1;
    }
    // The slow client was dropped: reading now ends in a close, not 4,000 messages.
    let slow_closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut n = 0;
        while let Some(m) = slow.next().await {
            match m {
                Ok(Message::Close(Some(f))) => return Some((u16::from(f.code), n)),
                Ok(_) => n += 1,
                Err(_) => return Some((0, n)),
            }
        }
        Some((0, n))
    })
    .await
    .ok()
    .flatten();
    // Its backlog ended (in a close frame or a reset) well before all the
    // feed messages it fell behind on.
    let slow_note = match slow_closed {
        Some((code, read)) if read < feed => {
            let how = if code == 0 {
                "disconnected".to_owned()
            } else {
                format!("closed with {code}")
            };
            format!("slow client {how} after reading {read} of {feed} feed frames")
        }
        other => {
            o.errors += 1;
            format!("slow client was not dropped: {other:?}")
        }
    };
    o.notes.push(format!(
        "normal client: {probes} echo probes, worst {} ms, {feed} feed messages; RSS +{growth_mib:.1} MiB; {slow_note}",
        worst.as_millis()
    ));
    Ok(o)
}

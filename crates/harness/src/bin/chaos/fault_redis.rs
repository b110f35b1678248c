//! Fault 2: the app's Redis (persistent, as in production) restarted while
//! users sign up: stop it with SIGTERM, keep it down for a fixed outage,
//! start it again on the same data.

use crate::Outcome;
use crate::auth::Keys;
use crate::faults::{account, env, problem_with_retry_after, wait_mails};
use crate::tools;
use anyhow::Context as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use test_support::{RedisProcess, SmtpSink, TestDb};

/// One sign-up every 25 ms (40 users/s) all through the run.
const SIGN_UP_EVERY: Duration = Duration::from_millis(25);
/// A sign-up must not wait on Redis: slower than this counts as a hang.
const SIGN_UP_BOUND: Duration = Duration::from_secs(2);
/// How old a `/readyz` answer can be: one check a second serves every caller.
const READINESS_MAX_AGE: Duration = Duration::from_secs(1);
/// `/readyz` gives each dependency 1.5 s; an answer later than this hung.
const READYZ_BOUND: Duration = Duration::from_secs(2);

/// Runs one command on the Redis at `url`, with a time limit.
async fn query<T: redis::FromRedisValue>(url: &str, cmd: &redis::Cmd) -> anyhow::Result<T> {
    let client = redis::Client::open(url)?;
    let mut c = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .context("connecting to the private Redis timed out")??;
    Ok(
        tokio::time::timeout(Duration::from_secs(2), cmd.query_async(&mut c))
            .await
            .context("the Redis command timed out")??,
    )
}

/// `CONFIG GET name` on the Redis at `url`.
async fn config(url: &str, name: &str) -> anyhow::Result<String> {
    let v: Vec<String> = query(url, redis::cmd("CONFIG").arg("GET").arg(name)).await?;
    v.get(1).cloned().context("no such setting")
}

struct SignUp {
    email: String,
    sent: Instant,
    took: Duration,
    answer: Result<u16, String>,
}

pub(crate) async fn redis_restart(quick: bool) -> anyhow::Result<Outcome> {
    let keys = Arc::new(Keys::start().await?);
    let db = TestDb::new().await;
    let mut private = RedisProcess::start_persistent();
    let url = private.url();
    let persistence = (
        config(&url, "appendonly").await?,
        config(&url, "appendfsync").await?,
    );
    anyhow::ensure!(
        persistence == ("yes".into(), "always".into()),
        "the private Redis runs with appendonly={} appendfsync={}",
        persistence.0,
        persistence.1
    );
    let smtp = SmtpSink::start();
    let env = env(db.url(), &private.url(), "chaos:", &keys, Some(&smtp));
    let (mut serve, _) = tools::start_app("serve", &env).await?;
    let (mut worker, _) = tools::start_app("worker", &env).await?;
    let pids = (serve.child.id(), worker.child.id());
    let port = serve.port;
    let client = tools::client(Duration::from_secs(5))?;
    let (before, outage, after) = if quick { (2, 4, 2) } else { (4, 10, 4) };

    // Sign-ups at a steady rate, in the background, until told to stop (or
    // a bound on their number, whatever happens to the flow below).
    let stop = Arc::new(AtomicBool::new(false));
    let max_sign_ups = (before + outage + after + 40) * 40;
    let driver = {
        let (keys, client, stop) = (keys.clone(), client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SIGN_UP_EVERY);
            let mut running = Vec::new();
            for i in 0..max_sign_ups {
                tick.tick().await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let email = format!("r{i}@chaos.example");
                let token = keys.token(&format!("redis-user-{i}"), Some(&email), None)?;
                let c = client.clone();
                running.push(tokio::spawn(async move {
                    let sent = Instant::now();
                    let answer = crate::faults::patch_me(&c, port, &token)
                        .await
                        .map_err(|e| e.to_string());
                    SignUp {
                        email,
                        sent,
                        took: sent.elapsed(),
                        answer,
                    }
                }));
            }
            let mut done = Vec::with_capacity(running.len());
            for r in running {
                done.push(r.await?);
            }
            anyhow::Ok(done)
        })
    };

    tokio::time::sleep(Duration::from_secs(before)).await;
    // A key written just before the stop must be there after the start: the
    // AOF, fsynced on every write, is what a restart recovers from.
    let sentinel = format!("chaos-aof-sentinel:{}", test_support::unique_suffix());
    query::<()>(&url, redis::cmd("SET").arg(&sentinel).arg("kept")).await?;
    let down_at = Instant::now();
    let stopped_in = private.stop_gracefully();

    // While it is down: /readyz says so, as a problem, every time, once the
    // result it serves (checked at most once a second) is newer than the stop.
    tokio::time::sleep(READINESS_MAX_AGE).await;
    let mut o = Outcome::default();
    let (mut probes, mut bad_probes, mut worst_probe) = (0, 0, Duration::ZERO);
    let up_at = down_at + Duration::from_secs(outage);
    while Instant::now() < up_at {
        let t = Instant::now();
        let r = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await;
        let took = t.elapsed();
        worst_probe = worst_probe.max(took);
        probes += 1;
        let verdict = match r {
            Ok(r) if r.status() == 503 && problem_with_retry_after(&r) && took <= READYZ_BOUND => {
                None
            }
            Ok(r) => Some(format!(
                "{} {:?} in {} ms",
                r.status(),
                r.headers().get("content-type"),
                took.as_millis()
            )),
            Err(e) => Some(format!("{e} after {} ms", took.as_millis())),
        };
        if let Some(v) = verdict {
            bad_probes += 1;
            if bad_probes <= 3 {
                o.notes.push(format!("/readyz with Redis down: {v}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    o.errors += bad_probes;
    private.resume();
    let restarted_at = Instant::now();
    let sentinel_kept: Option<String> = query(&url, redis::cmd("GET").arg(&sentinel)).await?;
    let keys_reloaded: u64 = query(&url, &redis::cmd("DBSIZE")).await?;
    if sentinel_kept.as_deref() != Some("kept") {
        o.errors += 1;
        o.notes
            .push("a key written before the stop was gone after the start: no AOF".into());
    }

    // Back without restarting the app: /readyz turns 200 by itself.
    let mut recovered = None;
    while restarted_at.elapsed() < Duration::from_secs(30) {
        let ok = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            recovered = Some(restarted_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if recovered.is_none() {
        o.errors += 1;
        o.notes
            .push("/readyz still not 200 30 s after Redis came back".into());
    }
    tokio::time::sleep(Duration::from_secs(after)).await;
    stop.store(true, Ordering::Relaxed);
    let sign_ups = driver.await??;
    for (what, p) in [("serve", &mut serve), ("worker", &mut worker)] {
        if p.child.try_wait()?.is_some() {
            o.errors += 1;
            o.notes.push(format!("the {what} process exited"));
        }
    }

    // Every sign-up answered 201 quickly, Redis or not.
    let restarted = restarted_at;
    let mut phases = [(0, 0, Duration::ZERO); 3];
    let mut expected = Vec::new();
    let mut bad_sign_ups = 0;
    for s in &sign_ups {
        let phase = if s.sent < down_at {
            0
        } else if s.sent < restarted {
            1
        } else {
            2
        };
        phases[phase].0 += 1;
        phases[phase].2 = phases[phase].2.max(s.took);
        match &s.answer {
            Ok(201) if s.took <= SIGN_UP_BOUND => {
                phases[phase].1 += 1;
                expected.push(s.email.clone());
            }
            other => {
                bad_sign_ups += 1;
                if bad_sign_ups <= 3 {
                    o.notes.push(format!(
                        "a sign-up answered {other:?} in {} ms",
                        s.took.as_millis()
                    ));
                }
                if matches!(other, Ok(201)) {
                    expected.push(s.email.clone());
                }
            }
        }
    }
    o.errors += bad_sign_ups;
    let got = wait_mails(
        &smtp,
        &expected,
        Duration::from_secs(if quick { 60 } else { 120 }),
    )
    .await;
    o.sent = sign_ups.len();
    account(&mut o, &expected, &got);
    o.allowed_duplicates = 0;
    let [b, d, a] = phases;
    // Sign-ups ran in every phase, or the phase proves nothing.
    for (phase, (n, _, _)) in ["before", "while down", "after"].iter().zip(phases) {
        if n == 0 {
            o.errors += 1;
            o.notes
                .push(format!("no sign-up was sent {phase} the outage"));
        }
    }
    o.notes.push(format!(
        "AOF on (appendfsync always); SIGTERM stop took {} ms, down {outage} s, {keys_reloaded} keys reloaded",
        stopped_in.as_millis()
    ));
    o.notes.push(format!(
        "sign-ups answered 201 within {} s: {}/{} before, {}/{} while down (worst {} ms), {}/{} after",
        SIGN_UP_BOUND.as_secs(),
        b.1,
        b.0,
        d.1,
        d.0,
        d.2.as_millis(),
        a.1,
        a.0
    ));
    o.notes.push(format!(
        "/readyz while down: {}/{probes} answered 503 problem+json with Retry-After, worst {} ms; 200 again {} ms after the start, same app processes (pids {}, {})",
        probes - bad_probes,
        worst_probe.as_millis(),
        recovered.map_or("never".into(), |r| r.as_millis().to_string()),
        pids.0,
        pids.1
    ));
    drop((serve, worker));
    Ok(o)
}

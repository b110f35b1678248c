//! Scenarios 15 and 16: the managed cloud's maintenance under load.
//!
//! 15: the app runs behind Redis Sentinel (a primary, its replica, one
//! Sentinel, all `redis-server` on loopback); while users sign up (each
//! sign-up an event the relay publishes, a consumer turns into a welcome
//! job, a worker sends), the primary is SIGKILLed and the Sentinel promotes
//! the replica. Nothing acknowledged may be lost (the relay's publishes,
//! enqueues and job removals wait for the replica), every user gets exactly
//! one welcome mail (the ledger absorbs a repeated job), and work resumes
//! within 10 s of the promotion.
//!
//! 16: the app reaches Postgres through PgBouncer in transaction mode (the
//! relay's session goes straight to Postgres, `DATABASE_DIRECT_URL`); the
//! pooler is killed and started again in the middle of a burst, every
//! server connection and client connection with it. No client may see an
//! error, every mail goes out once, every socket hears every change.

use crate::Outcome;
use crate::auth::Keys;
use crate::fault_idle::{Answers, burst, listeners, settle, start};
use crate::faults::env;
use crate::tools;
use std::time::{Duration, Instant};
use test_support::{PooledDatabase, SmtpSink, TestDb, TestRedis, TestSentinel};

/// Work must be flowing again this long after the new primary took writes.
const RESUME_BOUND: Duration = Duration::from_secs(10);

/// Scenario 15: the Redis primary dies mid-load; Sentinel fails over.
pub(crate) async fn sentinel_failover(quick: bool) -> anyhow::Result<Outcome> {
    let keys = Keys::start().await?;
    let db = TestDb::new().await;
    let mut ha = tokio::task::spawn_blocking(TestSentinel::start).await?;
    let smtp = SmtpSink::start();
    let env = env(db.url(), &ha.url(), "chaos:", &keys, Some(&smtp));
    let mut serve = start("serve", "15", &env).await?;
    let mut worker = start("worker", "15", &env).await?;
    let port = serve.port;
    let client = tools::client(Duration::from_secs(10))?;
    let (before, after) = if quick { (6, 10) } else { (15, 30) };
    let (mut answers, mut signed_up) = (Answers::default(), Vec::new());
    let mut n = 0;
    // Load before the failover, so jobs and events are in flight when the
    // primary dies.
    while n < before {
        burst(&client, &keys, port, n, &[], &mut answers, &mut signed_up).await?;
        n += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let old = ha.primary_port();
    let promotion = tokio::task::spawn_blocking(move || {
        let took = ha.kill_primary();
        (ha, took)
    });
    // Sign-ups go on while the Sentinel notices and promotes.
    let mut during = Vec::new();
    let (ha_back, took) = loop {
        if promotion.is_finished() {
            break promotion.await?;
        }
        burst(&client, &keys, port, n, &[], &mut answers, &mut during).await?;
        n += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    ha = ha_back;
    let promoted = Instant::now();
    signed_up.extend(during);
    // After the promotion: the first sign-up's mail is when work resumed.
    let mut first_after = Vec::new();
    let mut resumed: Option<Duration> = None;
    let mut rounds = 0;
    while rounds < after || (resumed.is_none() && promoted.elapsed() < RESUME_BOUND * 2) {
        burst(&client, &keys, port, n, &[], &mut answers, &mut first_after).await?;
        n += 1;
        rounds += 1;
        if resumed.is_none() {
            let got: std::collections::HashSet<String> = smtp
                .messages()
                .into_iter()
                .filter_map(|m| m.rcpt_tos.first().cloned())
                .collect();
            if first_after.iter().any(|e| got.contains(e)) {
                resumed = Some(promoted.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    signed_up.extend(first_after);
    let mut o = Outcome::default();
    o.notes.push(format!(
        "primary :{old} SIGKILLed; :{} promoted {:.1} s later; {n} bursts",
        ha.primary_port(),
        took.as_secs_f64()
    ));
    match resumed {
        Some(t) if t <= RESUME_BOUND => o.notes.push(format!(
            "work resumed {:.1} s after the promotion (first welcome mail of a later sign-up)",
            t.as_secs_f64()
        )),
        other => {
            o.errors += 1;
            o.notes.push(format!(
                "work did not resume within {RESUME_BOUND:?} of the promotion ({other:?})"
            ));
        }
    }
    settle(
        &mut o,
        &smtp,
        &answers,
        &signed_up,
        Vec::new(),
        n,
        &mut [("serve", &mut serve), ("worker", &mut worker)],
    )
    .await?;
    drop(ha);
    Ok(o)
}

/// Scenario 16: PgBouncer killed and started again in the middle of a burst.
pub(crate) async fn pgbouncer_restart(quick: bool) -> anyhow::Result<Outcome> {
    let keys = Keys::start().await?;
    let mut pooled = PooledDatabase::new(8).await;
    let redis = TestRedis::new().await;
    let smtp = SmtpSink::start();
    let mut env = env(
        pooled.url(),
        redis.url(),
        redis.prefix(),
        &keys,
        Some(&smtp),
    );
    env.push(("DATABASE_DIRECT_URL", pooled.direct_url().to_owned()));
    let mut serve = start("serve", "16", &env).await?;
    let mut worker = start("worker", "16", &env).await?;
    let port = serve.port;
    let client = tools::client(Duration::from_secs(10))?;
    let listeners = listeners(&keys, &client, port).await?;
    let restarts = if quick { 1 } else { 3 };
    let (mut answers, mut signed_up) = (Answers::default(), Vec::new());
    // A COMMIT in flight when the pooler dies has an unknown outcome: the
    // app answers 503 with Retry-After (it cannot repeat it safely), and
    // the client retries, as a phone does.
    answers.retry_unknown = true;
    let mut down_for = Vec::new();
    let mut n = 0;
    for _ in 0..restarts {
        for _ in 0..2 {
            burst(
                &client,
                &keys,
                port,
                n,
                &listeners,
                &mut answers,
                &mut signed_up,
            )
            .await?;
            n += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // Bursts back to back, and the restart lands in the middle of
        // them: requests are in flight on the pooler's connections.
        let bouncer = pooled.bouncer();
        let (load, restart) = tokio::join!(
            async {
                for _ in 0..4 {
                    burst(
                        &client,
                        &keys,
                        port,
                        n,
                        &listeners,
                        &mut answers,
                        &mut signed_up,
                    )
                    .await?;
                    n += 1;
                }
                anyhow::Ok(())
            },
            async {
                tokio::time::sleep(Duration::from_millis(40)).await;
                let t = Instant::now();
                bouncer.stop();
                bouncer.resume();
                t.elapsed()
            }
        );
        load?;
        down_for.push(restart);
    }
    for _ in 0..2 {
        burst(
            &client,
            &keys,
            port,
            n,
            &listeners,
            &mut answers,
            &mut signed_up,
        )
        .await?;
        n += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let bursts = n;
    let retries = tools::metric(&client, port, "db_lost_connection_retries_total", "").await?;
    // The fault reached the app: it logged in again through the pooler
    // started last (its connections before were the killed one's).
    let log = pooled.bouncer().log();
    let since_last_start = log.rsplit("process up").next().unwrap_or_default();
    let logins = since_last_start.matches("login attempt").count();
    let mut o = Outcome::default();
    if !answers.retried.is_empty() {
        o.notes.push(format!(
            "{} requests whose COMMIT the restart cut answered 503 + Retry-After and succeeded when the client retried ({:?})",
            answers.retried.len(),
            answers.retried
        ));
    }
    if logins == 0 {
        o.errors += 1;
        o.notes.push(
            "the app never connected through the restarted pooler: the restart did not reach it"
                .into(),
        );
    }
    o.notes.push(format!(
        "PgBouncer (transaction mode, 8 server connections) killed and restarted {} times mid-burst, down {:?} each; {bursts} bursts; the app logged in {logins} times through the last one started; {retries:.0} operations found their pooled connection lost and ran again on a fresh one (the others' connections were found closed before use)",
        down_for.len(),
        down_for
            .iter()
            .map(|d| format!("{} ms", d.as_millis()))
            .collect::<Vec<_>>()
    ));
    settle(
        &mut o,
        &smtp,
        &answers,
        &signed_up,
        listeners,
        bursts,
        &mut [("serve", &mut serve), ("worker", &mut worker)],
    )
    .await?;
    Ok(o)
}

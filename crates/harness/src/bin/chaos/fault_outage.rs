//! Scenarios 9 and 10: the welcome pipeline through a long consumer outage,
//! and through a worker killed while it sends.

use crate::Outcome;
use crate::auth::Keys;
use crate::faults::{env, kill9, patch_me};
use crate::tools;
use domain::events::USERS_TOPIC;
use ports::{EventConsumer as _, EventHandler, HandleEventError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::{SmtpSink, TestDb, TestRedis};
use tokio_util::sync::CancellationToken;

/// The stream cap both scenarios run under (the least the app accepts).
const STREAM_MAX_LEN: u64 = 100;

/// Another consumer group, always up: it handles everything at once and so
/// trims whatever the welcome group lets it.
struct KeepsUp;

#[async_trait::async_trait]
impl EventHandler for KeepsUp {
    fn handles(&self, _: &domain::DomainEvent) -> bool {
        true
    }
    async fn handle(&self, _: &domain::EventEnvelope) -> Result<(), HandleEventError> {
        Ok(())
    }
}

fn per_recipient(smtp: &SmtpSink) -> HashMap<String, Vec<String>> {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for mail in smtp.messages() {
        if let Some(r) = mail.rcpt_tos.first() {
            m.entry(r.clone())
                .or_default()
                .push(mail.message_id.clone());
        }
    }
    m
}

/// Waits until every expected recipient has mail or `deadline`; returns
/// when they all did (or `None`).
async fn all_mailed(smtp: &SmtpSink, expected: &[String], deadline: Instant) -> Option<Instant> {
    loop {
        let got = per_recipient(smtp);
        if expected.iter().all(|e| got.contains_key(e)) {
            return Some(Instant::now());
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn xlen(redis: &TestRedis, key: &str) -> anyhow::Result<u64> {
    Ok(redis::cmd("XLEN")
        .arg(key)
        .query_async(&mut redis.connection().await)
        .await?)
}

/// Scenario 9: the welcome group's consumers are down (their worker killed)
/// while far more users sign up than the stream's cap; a relay and another
/// consumer group keep running, and trim what they may. When a worker comes
/// back, every user gets their mail, once.
pub(crate) async fn long_consumer_outage(quick: bool) -> anyhow::Result<Outcome> {
    let users: usize = if quick { 300 } else { 1_000 };
    let keys = Keys::start().await?;
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    let smtp = SmtpSink::start();
    let mut e = env(db.url(), redis.url(), redis.prefix(), &keys, Some(&smtp));
    e.push(("STREAM_MAX_LEN", STREAM_MAX_LEN.to_string()));
    let (serve, _) = tools::start_app("serve", &e).await?;
    let (mut worker, _) = tools::start_app("worker", &e).await?;
    let client = tools::client(Duration::from_secs(10))?;
    // One user through the live pipeline: the welcome group exists.
    let warm = "warm@chaos.example".to_owned();
    let token = keys.token("outage-warm", Some(&warm), None)?;
    anyhow::ensure!(patch_me(&client, serve.port, &token).await? == 201);
    anyhow::ensure!(
        all_mailed(
            &smtp,
            std::slice::from_ref(&warm),
            Instant::now() + Duration::from_secs(30)
        )
        .await
        .is_some(),
        "the pipeline never mailed the first user"
    );
    kill9(&mut worker);

    // Meanwhile a relay publishes (this harness runs one, as another worker
    // of a deploy without the welcome group would) and another group keeps
    // up and trims.
    let stop = CancellationToken::new();
    let pool = postgres_adapter::build_pool(&postgres_adapter::PgSettings::new(db.url()))?;
    let fred = streams_adapter::connect(redis.url(), Duration::from_secs(5)).await?;
    let relay = usecases::OutboxRelay::new(
        Arc::new(postgres_adapter::PgOutbox::new(pool, db.url())),
        Arc::new(streams_adapter::RedisStreamPublisher::new(
            fred.clone(),
            redis.prefix(),
        )),
        usecases::RelaySettings::default(),
    );
    let relay_task = tokio::spawn({
        let stop = stop.clone();
        async move { relay.run(stop).await }
    });
    let other = streams_adapter::RedisStreamConsumer::new(
        &fred,
        streams_adapter::ConsumerSettings {
            max_len: STREAM_MAX_LEN,
            claim_idle: Duration::from_millis(500),
            ..streams_adapter::ConsumerSettings::new(redis.prefix(), USERS_TOPIC, "keeps-up", "k1")
        },
    );
    let other_task = tokio::spawn({
        let stop = stop.clone();
        async move { other.run(Arc::new(KeepsUp), stop).await }
    });
    let mut expected = Vec::with_capacity(users);
    let pairs: Vec<(String, Option<String>)> = (0..users)
        .map(|i| {
            (
                format!("outage-{i}"),
                Some(format!("outage{i}@chaos.example")),
            )
        })
        .collect();
    let tokens = keys.tokens(&pairs)?;
    for ((_, email), token) in pairs.iter().zip(&tokens) {
        anyhow::ensure!(patch_me(&client, serve.port, token).await? == 201);
        expected.push(email.clone().unwrap_or_default());
    }
    let stream = streams_adapter::stream_key(redis.prefix(), USERS_TOPIC);
    // Everything is published, and the other group's janitor has run.
    let published_by = Instant::now() + Duration::from_secs(30);
    let mut peak = 0;
    while Instant::now() < published_by {
        peak = peak.max(xlen(&redis, &stream).await?);
        if peak > users as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = xlen(&redis, &stream).await?;
    stop.cancel();
    let _ = relay_task.await;
    let _ = other_task.await;

    let restarted = Instant::now();
    let (worker, _) = tools::start_app("worker", &e).await?;
    let done = all_mailed(&smtp, &expected, Instant::now() + Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // room for a repeat to show
    let got = per_recipient(&smtp);
    let mut o = Outcome {
        sent: users,
        allowed_duplicates: 0,
        ..Outcome::default()
    };
    o.processed = expected.iter().filter(|e| got.contains_key(*e)).count();
    o.lost = users - o.processed;
    o.duplicated = got.values().map(|ids| ids.len().saturating_sub(1)).sum();
    if during < users as u64 {
        o.errors += 1;
        o.notes.push(format!(
            "the stream held {during} entries for {users} unread sign-ups: some were trimmed"
        ));
    }
    o.notes.push(format!(
        "welcome consumers down while {users} users signed up past a cap of {STREAM_MAX_LEN}: the stream held {during} entries (peak {peak}); {} of {users} mails {} after the worker came back",
        o.processed,
        done.map_or("not all".to_owned(), |t| format!("within {:.1} s", (t - restarted).as_secs_f64()))
    ));
    drop((serve, worker));
    Ok(o)
}

/// Scenario 10: the worker is SIGKILLed as its first mails are accepted;
/// a new one takes the dead one's sends over as soon as their leases end.
/// Reports the recovery time (kill to the last user's mail).
pub(crate) async fn killed_while_sending(quick: bool) -> anyhow::Result<Outcome> {
    const CONCURRENCY: usize = 16;
    let users: usize = if quick { 60 } else { 200 };
    let keys = Keys::start().await?;
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    let smtp = SmtpSink::start();
    let mut e = env(db.url(), redis.url(), redis.prefix(), &keys, Some(&smtp));
    e.push(("WORKER_CONCURRENCY", CONCURRENCY.to_string()));
    let lease = Duration::from_secs(
        e.iter()
            .find(|(k, _)| *k == "JOB_LEASE_SECS")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(30),
    );
    let retry_base = Duration::from_millis(
        e.iter()
            .find(|(k, _)| *k == "JOB_RETRY_BASE_MS")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(2000),
    );
    let (serve, _) = tools::start_app("serve", &e).await?;
    let client = tools::client(Duration::from_secs(10))?;
    let pairs: Vec<(String, Option<String>)> = (0..users)
        .map(|i| (format!("kill-{i}"), Some(format!("kill{i}@chaos.example"))))
        .collect();
    let tokens = keys.tokens(&pairs)?;
    let expected: Vec<String> = pairs.iter().filter_map(|(_, e)| e.clone()).collect();
    // Every user signs up before the worker starts: it has a backlog to send.
    for token in &tokens {
        anyhow::ensure!(patch_me(&client, serve.port, token).await? == 201);
    }
    let (mut worker, _) = tools::start_app("worker", &e).await?;
    let first_by = Instant::now() + Duration::from_secs(30);
    while smtp.messages().is_empty() {
        anyhow::ensure!(Instant::now() < first_by, "no mail was ever sent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    kill9(&mut worker);
    let killed_at = Instant::now();
    let at_kill = per_recipient(&smtp).len();
    let (worker, _) = tools::start_app("worker", &e).await?;
    // The bound: the dead worker's leases end, the new worker's recoverer
    // (every quarter lease) moves them to retry, due after the first retry
    // delay, forwarded within 250 ms; then the rest of the backlog is sent.
    let bound =
        lease + lease / 4 + retry_base + Duration::from_millis(250) + Duration::from_secs(10);
    let done = all_mailed(
        &smtp,
        &expected,
        killed_at + bound + Duration::from_secs(30),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = per_recipient(&smtp);
    let mut o = Outcome {
        sent: users,
        // Only a send in flight at the kill can go twice.
        allowed_duplicates: CONCURRENCY,
        ..Outcome::default()
    };
    o.processed = expected.iter().filter(|e| got.contains_key(*e)).count();
    o.lost = users - o.processed;
    o.duplicated = got.values().map(|ids| ids.len().saturating_sub(1)).sum();
    for ids in got.values().filter(|ids| ids.len() > 1) {
        if ids.iter().any(|id| id != &ids[0]) {
            o.errors += 1;
            o.notes
                .push(format!("a repeat with another Message-ID: {ids:?}"));
        }
    }
    if at_kill >= users {
        o.errors += 1;
        o.notes
            .push("every mail was out before the kill: the fault did not happen".into());
    }
    match done {
        Some(t) if t - killed_at <= bound => o.notes.push(format!(
            "killed with {at_kill} of {users} mailed; every user mailed {:.2} s after the kill (bound {:.2} s: lease {} s + recovery + first retry); {} repeat(s), same Message-ID",
            (t - killed_at).as_secs_f64(),
            bound.as_secs_f64(),
            lease.as_secs(),
            o.duplicated
        )),
        Some(t) => {
            o.errors += 1;
            o.notes.push(format!(
                "every user mailed only {:.2} s after the kill, past the {:.2} s bound",
                (t - killed_at).as_secs_f64(),
                bound.as_secs_f64()
            ));
        }
        None => o.notes.push("not every user was mailed".into()),
    }
    drop((serve, worker));
    Ok(o)
}

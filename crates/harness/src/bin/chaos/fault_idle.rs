//! Scenarios 13 and 14: servers that close the app's connections, as managed
//! platforms do (Redis `timeout` and maintenance, load balancers' idle limits,
//! Postgres `idle_session_timeout`, a pooler's `server_idle_timeout`). Users
//! sign up, read and change their profiles in bursts, sockets listen, and no
//! client may see an error: a connection the server closed is the app's
//! business, not its users'.
//!
//! 13: a Redis of the scenario's own closes every client connection (normal
//! and pub/sub) every 5 s. 14: Postgres ends every session of the app's
//! that sits idle for 2 s, and the bursts come 3 s apart, so every pooled
//! connection, the relay's leader session and its LISTEN connection are
//! gone before each burst.
//!
//! Longer than 450 lines: two scenarios (13 and 14) that share their burst,
//! listener and accounting code.

use crate::Outcome;
use crate::auth::Keys;
use crate::faults::{account, env, wait_mails};
use crate::tools::{self, Proc};
use futures_util::{SinkExt as _, StreamExt as _};
use std::collections::{BTreeSet, HashMap};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use test_support::{RedisProcess, SmtpSink, TestDb, TestRedis};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// Users who each hold a socket and change their name in every burst.
const LISTENERS: usize = 4;
/// New users signing up in every burst.
const SIGN_UPS_PER_BURST: usize = 4;
/// How long after the last burst a socket may still be waiting for its
/// last `profile.updated`: the relay's poll (1 s when no notification comes),
/// the consumer's claim time (`STREAM_CLAIM_IDLE_MS`, 1.5 s) for an entry
/// whose delivery was cut, and the fan-out's first reconnect attempt, with
/// margin.
const NOTIFY_BOUND: Duration = Duration::from_secs(10);
/// Every request of a burst must be answered within this (no hang on a
/// dead connection either).
const ANSWER_BOUND: Duration = Duration::from_secs(5);

/// What one socket received: the display names of its `profile.updated`
/// messages, and whether the server closed it.
#[derive(Default)]
struct Heard {
    names: BTreeSet<String>,
    closed: Option<String>,
    /// Times the server said it lost track of the user's topic, and the
    /// client subscribed again from its last offset (as docs/realtime-clients.md
    /// tells clients to).
    resubscribed: usize,
    /// Resubscriptions the history could not serve (a loss).
    unrecovered: usize,
}

/// A listener: its token and what its socket heard.
pub(crate) struct Listener {
    token: String,
    heard: Arc<Mutex<Heard>>,
    reader: tokio::task::JoinHandle<()>,
}

async fn listen(port: u16, token: String) -> anyhow::Result<Listener> {
    let mut req = format!("ws://127.0.0.1:{port}/ws").into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (ws, _) =
        tokio::time::timeout(ANSWER_BOUND, tokio_tungstenite::connect_async(req)).await??;
    let heard = Arc::new(Mutex::new(Heard::default()));
    let reader = {
        let heard = heard.clone();
        tokio::spawn(async move {
            let (mut sink, mut stream) = ws.split();
            // The user topic's last offset and epoch.
            let mut last: Option<(i64, String)> = None;
            // Ends when the socket ends (or the scenario aborts it).
            while let Some(m) = stream.next().await {
                match m {
                    Ok(Message::Text(t)) => {
                        let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                        if let (Some(offset), Some(epoch)) =
                            (v["offset"].as_i64(), v["epoch"].as_str())
                        {
                            last = Some((offset, epoch.to_owned()));
                        }
                        if v["type"] == "profile.updated"
                            && let Some(name) = v["data"]["display_name"].as_str()
                        {
                            heard
                                .lock()
                                .map(|mut h| h.names.insert(name.to_owned()))
                                .ok();
                        }
                        if v["type"] == "unsubscribed"
                            && v["data"]["reason"] == "insufficient_state"
                        {
                            let mut data = serde_json::json!({"topic": v["data"]["topic"]});
                            if let Some((offset, epoch)) = &last {
                                data["since"] =
                                    serde_json::json!({"offset": offset, "epoch": epoch});
                            }
                            let resubscribe = serde_json::json!({"type": "subscribe", "id": "resub", "data": data});
                            if sink
                                .send(Message::Text(resubscribe.to_string().into()))
                                .await
                                .is_err()
                            {
                                break;
                            }
                            heard.lock().map(|mut h| h.resubscribed += 1).ok();
                        }
                        if v["type"] == "subscribed"
                            && v["id"] == "resub"
                            && v["data"]["recovered"] != true
                        {
                            heard.lock().map(|mut h| h.unrecovered += 1).ok();
                        }
                    }
                    Ok(Message::Close(frame)) => {
                        if let Ok(mut h) = heard.lock() {
                            h.closed = Some(format!("closed by the server: {frame:?}"));
                        }
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if let Ok(mut h) = heard.lock() {
                            h.closed = Some(format!("socket error: {e}"));
                        }
                        return;
                    }
                }
            }
            if let Ok(mut h) = heard.lock() {
                h.closed.get_or_insert_with(|| "ended".into());
            }
        })
    };
    Ok(Listener {
        token,
        heard,
        reader,
    })
}

/// Answers by what they were, over a whole scenario.
#[derive(Default)]
pub(crate) struct Answers {
    by_kind: HashMap<String, usize>,
    bad: Vec<String>,
    worst: Duration,
    /// Whether the client retries once after a 503 with `Retry-After`, as
    /// a mobile client does: for faults that cut a `COMMIT` in flight,
    /// whose outcome the server cannot know.
    pub(crate) retry_unknown: bool,
    /// Requests answered 503 + `Retry-After` whose retry succeeded.
    pub(crate) retried: Vec<String>,
    /// Name changes (listener, name) answered 503 and retried: if the
    /// first attempt's COMMIT took effect, the retry changes nothing and
    /// pushes nothing (a profile is pushed when a PATCH changes it, and
    /// realtime is best effort), so that listener may not hear the name.
    unpushed: Vec<(usize, String)>,
}

impl Answers {
    pub(crate) fn record(
        &mut self,
        what: &str,
        expected: u16,
        took: Duration,
        got: Result<u16, String>,
    ) {
        self.worst = self.worst.max(took);
        match got {
            Ok(s) if s == expected && took <= ANSWER_BOUND => {
                *self.by_kind.entry(what.to_owned()).or_default() += 1;
            }
            other => self.bad.push(format!(
                "{what} answered {other:?} in {} ms",
                took.as_millis()
            )),
        }
    }
}

async fn request(req: reqwest::RequestBuilder) -> (Duration, Result<u16, String>) {
    let t = Instant::now();
    let r = req
        .send()
        .await
        .map(|r| {
            // A 503 must say when to come back, as a problem document.
            if r.status().as_u16() == 503 && !crate::faults::problem_with_retry_after(&r) {
                599
            } else {
                r.status().as_u16()
            }
        })
        .map_err(|e| e.to_string());
    (t.elapsed(), r)
}

/// `request`, and with `retry` once more after a 503 with `Retry-After`
/// (a sign-up's retry may find the user its first attempt created: 200).
/// Returns whether it was retried.
async fn request_retrying(
    req: reqwest::RequestBuilder,
    expected: u16,
    retry: bool,
) -> (Duration, Result<u16, String>, bool) {
    let again = req.try_clone();
    let (took, got) = request(req).await;
    match (got, again) {
        (Ok(503), Some(again)) if retry => {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (took2, got2) = request(again).await;
            let got2 = match got2 {
                Ok(200) if expected == 201 => Ok(201),
                other => other,
            };
            (took + took2, got2, true)
        }
        (got, _) => (took, got, false),
    }
}

/// One burst: `SIGN_UPS_PER_BURST` new users sign up, every listener reads
/// its profile and changes its name to `b{burst}`, all at once.
pub(crate) async fn burst(
    client: &reqwest::Client,
    keys: &Keys,
    port: u16,
    n: usize,
    listeners: &[Listener],
    answers: &mut Answers,
    signed_up: &mut Vec<String>,
) -> anyhow::Result<()> {
    let base = format!("http://127.0.0.1:{port}/api/v1/me");
    let mut calls = Vec::new();
    for i in 0..SIGN_UPS_PER_BURST {
        let email = format!("idle-{n}-{i}@chaos.example");
        let token = keys.token(&format!("idle-user-{n}-{i}"), Some(&email), None)?;
        signed_up.push(email);
        let req = client
            .patch(&base)
            .bearer_auth(token)
            .json(&serde_json::json!({}));
        calls.push(("sign-up", 201, req, None));
    }
    for (i, l) in listeners.iter().enumerate() {
        calls.push((
            "GET /me",
            200,
            client.get(&base).bearer_auth(&l.token),
            None,
        ));
        let req = client
            .patch(&base)
            .bearer_auth(&l.token)
            .json(&serde_json::json!({"display_name": format!("b{n}")}));
        calls.push(("name change", 200, req, Some(i)));
    }
    let retry = answers.retry_unknown;
    let running: Vec<_> = calls
        .into_iter()
        .map(|(what, expected, req, listener)| {
            tokio::spawn(async move {
                (
                    what,
                    expected,
                    listener,
                    request_retrying(req, expected, retry).await,
                )
            })
        })
        .collect();
    for r in running {
        let (what, expected, listener, (took, got, retried)) = r.await?;
        if retried && got.as_ref().is_ok_and(|s| *s == expected) {
            answers.retried.push(what.to_owned());
            if let Some(i) = listener {
                answers.unpushed.push((i, format!("b{n}")));
            }
        }
        answers.record(what, expected, took, got);
    }
    Ok(())
}

/// What every scenario checks at the end: every answer as expected, every
/// mail once, every socket open with every name it was given.
pub(crate) async fn settle(
    o: &mut Outcome,
    smtp: &SmtpSink,
    answers: &Answers,
    signed_up: &[String],
    listeners: Vec<Listener>,
    bursts: usize,
    processes: &mut [(&str, &mut Proc)],
) -> anyhow::Result<()> {
    o.errors += answers.bad.len();
    o.notes.extend(answers.bad.iter().take(3).cloned());
    let all_names: BTreeSet<String> = (0..bursts).map(|n| format!("b{n}")).collect();
    let want_of = |i: usize| -> BTreeSet<String> {
        let mut w = all_names.clone();
        for (l, name) in &answers.unpushed {
            if *l == i {
                w.remove(name);
            }
        }
        w
    };
    let deadline = Instant::now() + NOTIFY_BOUND;
    loop {
        let all = listeners.iter().enumerate().all(|(i, l)| {
            l.heard
                .lock()
                .map(|h| h.names.is_superset(&want_of(i)))
                .unwrap_or(false)
        });
        if all || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut missed, mut resubscribed) = (0, 0);
    for (i, l) in listeners.iter().enumerate() {
        let h = l.heard.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        resubscribed += h.resubscribed;
        if h.unrecovered > 0 {
            o.errors += h.unrecovered;
            o.notes.push(format!(
                "socket {i}: {} resubscriptions the history could not serve",
                h.unrecovered
            ));
        }
        let lost: Vec<_> = want_of(i).difference(&h.names).cloned().collect();
        missed += lost.len();
        if !lost.is_empty() {
            o.notes
                .push(format!("socket {i} never heard of names {lost:?}"));
        }
        if let Some(why) = &h.closed {
            o.errors += 1;
            o.notes.push(format!("socket {i} {why}"));
        }
    }
    o.errors += missed;
    let sockets = listeners.len();
    if sockets > 0 {
        let expected = sockets * bursts - answers.unpushed.len();
        o.notes.push(format!(
            "{} of {expected} profile.updated heard on {sockets} sockets ({resubscribed} times the server asked a socket to resubscribe, and it recovered from its last offset)",
            expected - missed,
        ));
        if !answers.unpushed.is_empty() {
            o.notes.push(format!(
                "{} name changes answered 503 and retried were not expected on their sockets: when the first COMMIT took effect, the retry changes nothing and pushes nothing",
                answers.unpushed.len()
            ));
        }
    }
    for l in listeners {
        l.reader.abort();
    }
    let got = wait_mails(smtp, signed_up, Duration::from_secs(30)).await;
    o.sent = signed_up.len();
    account(o, signed_up, &got);
    o.allowed_duplicates = 0;
    for (what, p) in processes.iter_mut() {
        if p.child.try_wait()?.is_some() {
            o.errors += 1;
            o.notes.push(format!("the {what} process exited"));
        }
    }
    let mut kinds: Vec<_> = answers
        .by_kind
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    kinds.sort();
    o.notes.push(format!(
        "answered as expected: {} (worst {} ms); {} mails for {} sign-ups",
        kinds.join(", "),
        answers.worst.as_millis(),
        o.processed,
        signed_up.len()
    ));
    Ok(())
}

pub(crate) async fn listeners(
    keys: &Keys,
    client: &reqwest::Client,
    port: u16,
) -> anyhow::Result<Vec<Listener>> {
    let mut out = Vec::new();
    for i in 0..LISTENERS {
        let token = keys.token(
            &format!("idle-listener-{i}"),
            Some(&format!("listener{i}@chaos.example")),
            None,
        )?;
        anyhow::ensure!(crate::faults::patch_me(client, port, &token).await? == 201);
        out.push(listen(port, token).await?);
    }
    Ok(out)
}

/// Starts `role` with `env`; with `CHAOS_LOG_DIR` set, its log (at info)
/// goes to `<dir>/<scenario>-<role>.log`.
pub(crate) async fn start(
    role: &str,
    scenario: &str,
    env: &[(&'static str, String)],
) -> anyhow::Result<Proc> {
    let mut env = env.to_vec();
    if let Some(dir) = std::env::var_os("CHAOS_LOG_DIR") {
        let path = std::path::Path::new(&dir).join(format!("{scenario}-{role}.log"));
        env.push(("HARNESS_LOG_FILE", path.display().to_string()));
        env.push(("RUST_LOG", "info".into()));
    }
    Ok(tools::start_app(role, &env).await?.0)
}

/// Runs one command on the Redis at `url`.
async fn redis_cmd<T: redis::FromRedisValue>(url: &str, cmd: &redis::Cmd) -> anyhow::Result<T> {
    let client = redis::Client::open(url)?;
    let mut c = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await??;
    Ok(tokio::time::timeout(Duration::from_secs(2), cmd.query_async(&mut c)).await??)
}

/// Scenario 13: Redis closes every client connection every 5 s.
pub(crate) async fn redis_closes_connections(quick: bool) -> anyhow::Result<Outcome> {
    const KILL_EVERY: Duration = Duration::from_secs(5);
    let keys = Keys::start().await?;
    let db = TestDb::new().await;
    let redis = RedisProcess::start();
    let url = redis.url();
    let smtp = SmtpSink::start();
    let env = env(db.url(), &url, "chaos:", &keys, Some(&smtp));
    let mut serve = start("serve", "13", &env).await?;
    let mut worker = start("worker", "13", &env).await?;
    let port = serve.port;
    let client = tools::client(ANSWER_BOUND * 2)?;
    let listeners = listeners(&keys, &client, port).await?;
    let run_for = Duration::from_secs(if quick { 20 } else { 60 });
    let started = Instant::now();
    let (mut answers, mut signed_up) = (Answers::default(), Vec::new());
    let mut killed = Vec::new();
    let mut next_kill = started + KILL_EVERY;
    let mut n = 0;
    while started.elapsed() < run_for {
        // No kill in the last interval: a message the fan-out missed shows
        // as a gap only when a later one on the topic arrives, and the
        // bursts after the last kill bring those.
        if Instant::now() >= next_kill && next_kill + KILL_EVERY <= started + run_for {
            next_kill += KILL_EVERY;
            let mut k = 0_i64;
            for kind in ["normal", "pubsub"] {
                k += redis_cmd::<i64>(
                    &url,
                    redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("TYPE")
                        .arg(kind)
                        .arg("SKIPME")
                        .arg("yes"),
                )
                .await?;
            }
            killed.push(k);
        }
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
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut o = Outcome::default();
    // The fault really happened: each round closed the app's connections.
    if killed.is_empty() || killed.contains(&0) {
        o.errors += 1;
        o.notes.push(format!(
            "a round closed no connection ({killed:?}): the fault did not happen"
        ));
    }
    o.notes.push(format!(
        "Redis closed the app's connections {} times ({:?} each), {n} bursts over {} s",
        killed.len(),
        killed,
        run_for.as_secs()
    ));
    settle(
        &mut o,
        &smtp,
        &answers,
        &signed_up,
        listeners,
        n,
        &mut [("serve", &mut serve), ("worker", &mut worker)],
    )
    .await?;
    Ok(o)
}

/// The backend pids of the app's sessions (by application name).
fn app_sessions(base: &str, app_name: &str) -> anyhow::Result<BTreeSet<i64>> {
    let out = tools::run_for(
        Command::new("psql").args([
            base,
            "-Atc",
            &format!("SELECT pid FROM pg_stat_activity WHERE application_name = '{app_name}'"),
        ]),
        Duration::from_secs(10),
    )?;
    Ok(out.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Scenario 14: Postgres ends the app's sessions idle for 2 s; requests
/// come in bursts 3 s apart.
pub(crate) async fn postgres_idle_timeout(quick: bool) -> anyhow::Result<Outcome> {
    const IDLE_TIMEOUT_MS: u64 = 2_000;
    const BURST_EVERY: Duration = Duration::from_secs(3);
    let keys = Keys::start().await?;
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    let smtp = SmtpSink::start();
    // The session settings ride on the connection's `options` (the test
    // schema's search_path is there already), so only the app's sessions
    // have the timeout; its application_name finds them.
    anyhow::ensure!(
        db.url().contains("options=") && db.url().ends_with(db.schema()),
        "the test database URL does not end with its options: {}",
        db.url()
    );
    let app_name = format!("chaos-idle-{}", test_support::unique_suffix());
    let db_url = format!(
        "{}%20-c%20idle_session_timeout%3D{IDLE_TIMEOUT_MS}&application_name={app_name}",
        db.url()
    );
    let base = db.url().split('?').next().unwrap_or_default().to_owned();
    let env = env(&db_url, redis.url(), redis.prefix(), &keys, Some(&smtp));
    let mut serve = start("serve", "14", &env).await?;
    let mut worker = start("worker", "14", &env).await?;
    let port = serve.port;
    let client = tools::client(ANSWER_BOUND * 2)?;
    let listeners = listeners(&keys, &client, port).await?;
    let bursts = if quick { 5 } else { 12 };
    let (mut answers, mut signed_up) = (Answers::default(), Vec::new());
    let mut ended = 0;
    let mut before = app_sessions(&base, &app_name)?;
    for n in 0..bursts {
        tokio::time::sleep(BURST_EVERY).await;
        // The sessions open after the last burst that are gone now: ended
        // by the server while idle.
        let now = app_sessions(&base, &app_name)?;
        ended += before.difference(&now).count();
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
        before = app_sessions(&base, &app_name)?;
    }
    let mut o = Outcome::default();
    if ended == 0 {
        o.errors += 1;
        o.notes
            .push("no session of the app's ended while idle: the fault did not happen".into());
    }
    o.notes.push(format!(
        "idle_session_timeout {IDLE_TIMEOUT_MS} ms, {bursts} bursts {} s apart; the server ended {ended} of the app's sessions while idle",
        BURST_EVERY.as_secs()
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

//! Scenario 6: idle WebSocket connections (server RSS per connection),
//! broadcasts to all of them, and broadcast throughput and latency against a
//! bare actix-ws server built in this workspace.
//!
//! Longer than 450 lines: the scenario's three measurements (idle RSS,
//! broadcast throughput, delivery latency) and the raw clients they share.

use crate::auth::Keys;
use crate::report::Scenario;
use crate::tools::{self, Proc};
use futures_util::{SinkExt as _, StreamExt as _};
use ports::{
    Audience, Fanout as _, FanoutMessage, HistoryOptions, Notification, TopicHistory as _,
};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use streams_adapter::RedisFanout;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Counts every message every client receives, and each one's latency.
#[derive(Default)]
struct Inbox {
    received: AtomicUsize,
    latencies_us: Mutex<Vec<f64>>,
    /// When the latest message arrived (µs since the epoch).
    last_us: AtomicI64,
}

impl Inbox {
    fn count(&self) -> usize {
        self.received.load(Ordering::Relaxed)
    }

    fn last_us(&self) -> i64 {
        self.last_us.load(Ordering::Relaxed)
    }

    fn take_latencies(&self) -> Vec<f64> {
        let mut v = self
            .latencies_us
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        v.sort_by(f64::total_cmp);
        v
    }
}

/// Opens `n` sockets to `url` (with `token` if given), subscribed to
/// `topic` if given, and reads them into `inbox`.
async fn open(
    n: usize,
    url: &str,
    token: Option<&str>,
    topic: Option<&str>,
    inbox: Arc<Inbox>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let gate = Arc::new(Semaphore::new(200));
    let mut opening = Vec::with_capacity(n);
    let topic = topic.map(str::to_owned);
    for _ in 0..n {
        let topic = topic.clone();
        let mut req = url.into_client_request()?;
        if let Some(t) = token {
            req.headers_mut()
                .insert("authorization", format!("Bearer {t}").parse()?);
        }
        let gate = gate.clone();
        opening.push(tokio::spawn(async move {
            let _permit = gate.acquire().await?;
            let (ws, _) = tokio::time::timeout(
                Duration::from_secs(20),
                tokio_tungstenite::connect_async(req),
            )
            .await
            .map_err(|_| anyhow::anyhow!("a WebSocket handshake took over 20 s"))??;
            let mut ws = ws;
            if let Some(topic) = topic {
                subscribe(&mut ws, &topic, None).await?;
            }
            anyhow::Ok(ws)
        }));
    }
    let mut readers = Vec::with_capacity(n);
    for o in opening {
        let mut ws = o.await??;
        let inbox = inbox.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                    // Only the broadcasts carry a send time.
                    let Some(sent) = v["data"]["t"].as_i64().or_else(|| v["t"].as_i64()) else {
                        continue;
                    };
                    let now = now_us();
                    inbox.received.fetch_add(1, Ordering::Relaxed);
                    inbox.last_us.fetch_max(now, Ordering::Relaxed);
                    if let Ok(mut l) = inbox.latencies_us.lock() {
                        l.push((now - sent) as f64);
                    }
                }
            }
        }));
    }
    Ok(readers)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The topic the history scenarios use (`public:*` keeps history in the
/// bench's app: `WS_PUBLIC_HISTORY_SIZE`).
const TOPIC: &str = "public:bench";
const HISTORY: HistoryOptions = HistoryOptions {
    size: 100,
    ttl: Duration::from_secs(300),
};

/// Subscribes and returns the `subscribed` reply's data (within 30 s).
async fn subscribe(
    ws: &mut Socket,
    topic: &str,
    since: Option<&serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let mut data = serde_json::json!({"topic": topic});
    if let Some(since) = since {
        data["since"] = since.clone();
    }
    let frame = serde_json::json!({"type": "subscribe", "id": "s", "data": data});
    ws.send(Message::text(frame.to_string())).await?;
    let reply = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(msg) = ws.next().await {
            if let Message::Text(t) = msg? {
                let v: serde_json::Value = serde_json::from_str(&t)?;
                if v["id"] == "s" {
                    return anyhow::Ok(v);
                }
            }
        }
        anyhow::bail!("closed before the subscription was confirmed")
    })
    .await
    .map_err(|_| anyhow::anyhow!("no subscribed reply in 30 s"))??;
    anyhow::ensure!(reply["type"] == "subscribed", "subscribe failed: {reply}");
    Ok(reply["data"].clone())
}

async fn wait_for(inbox: &Inbox, n: usize, limit: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while inbox.count() < n {
        anyhow::ensure!(
            start.elapsed() < limit,
            "received {} of {n} messages",
            inbox.count()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(start.elapsed())
}

async fn ws_connections(port: u16) -> f64 {
    let Ok(client) = tools::client(Duration::from_secs(5)) else {
        return 0.0;
    };
    let text = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .ok();
    let text = match text {
        Some(r) => r.text().await.unwrap_or_default(),
        None => return 0.0,
    };
    text.lines()
        .find_map(|l| l.strip_prefix("ws_connections "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn notification(pad: usize) -> FanoutMessage {
    to(Audience::Everyone, pad)
}

fn to(audience: Audience, pad: usize) -> FanoutMessage {
    FanoutMessage {
        origin: "bench".into(),
        audience,
        notification: Notification::new(
            "bench",
            serde_json::json!({"t": now_us(), "p": "x".repeat(pad)}),
        ),
        disconnect: None,
        position: None,
        acked: None,
    }
}

pub(crate) async fn run(quick: bool, out: &mut Vec<Scenario>) -> anyhow::Result<()> {
    let keys = Keys::start().await?;
    let db = test_support::TestDb::new().await;
    let redis = test_support::TestRedis::new().await;
    let mut env = crate::http::app_env(&db, &redis, &keys);
    // Recovery and presence on, as in production; `public:*` keeps history
    // too, for the broadcast and recovery runs.
    env.push(("WS_PUBLIC_HISTORY_SIZE", HISTORY.size.to_string()));
    let (app, _) = tools::start_app("serve", &env).await?;
    let token = keys.token("bench-ws", None, None)?;
    let url = format!("ws://127.0.0.1:{}/ws", app.port);
    let fanout_client = streams_adapter::connect(redis.url(), Duration::from_secs(5)).await?;
    let fanout = RedisFanout::new(&fanout_client, redis.prefix())?;
    let mut s = Scenario::new("6. WebSocket");

    // Idle connections: server memory per connection.
    let idle = if quick { 1_000 } else { 10_000 };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = tools::rss_kib(app.child.id())?;
    let inbox = Arc::new(Inbox::default());
    let readers = open(idle, &url, Some(&token), None, inbox.clone()).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ws_connections(app.port).await < idle as f64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "not all {idle} sockets registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = tools::rss_kib(app.child.id())?;
    let per_conn = (rss_after.saturating_sub(rss_before)) as f64 / idle as f64;

    // A broadcast to all of them, five rounds one after the other: each
    // round's rate is its deliveries over the time from its publish to its
    // last delivery (no idle time between rounds is counted).
    let rounds = 5;
    let mut rates = Vec::with_capacity(rounds);
    {
        let _perf = tools::Perf::attach(app.child.id(), "ws-broadcast-10000");
        for _ in 0..rounds {
            let before = inbox.count();
            let published = now_us();
            fanout.publish(&notification(16)).await?;
            wait_for(&inbox, before + idle, Duration::from_secs(30)).await?;
            let took_s = (inbox.last_us() - published).max(1) as f64 / 1e6;
            rates.push(idle as f64 / took_s);
        }
    }
    rates.sort_by(f64::total_cmp);
    let lat = inbox.take_latencies();
    s.figure(
        &format!("broadcast to {idle}: p99 delivery ms"),
        tools::percentile(&lat, 0.99) / 1000.0,
    );
    s.figure(
        &format!("broadcast to {idle}: deliveries/s, publish to last delivery (median of {rounds} rounds)"),
        rates[rounds / 2],
    );
    s.notes.push(format!(
        "broadcast to {idle}: rounds {:.0?} deliveries/s",
        rates
    ));
    for r in readers {
        r.abort();
    }
    drop(app);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let bare_per_conn = bare_rss_per_conn(idle).await?;
    s.ratio_at_most(
        &format!("server RSS per idle authenticated connection ({idle} open, recovery and presence on) vs bare actix-ws"),
        per_conn,
        bare_per_conn,
        1.25,
        "KiB",
    );

    // Throughput against the bare server: 1,000 subscribers of a topic with
    // history, 64-byte messages, each recorded then fanned out.
    let subscribers = 1_000;
    let messages = if quick { 50 } else { 200 };
    let (app, _) = tools::start_app("serve", &env).await?;
    let app_rate = throughput_app(&app, &token, &fanout, subscribers, messages).await?;
    // The naive baseline occasionally stalls a session; measure it up to
    // twice. A baseline that never delivered everything is reported as
    // incomplete: its partial rate would inflate the ratio.
    let mut bare_rate = None;
    for attempt in 1..=2 {
        let bare = tools::start_self("--serve-ws").await?;
        let (rate, complete) = throughput_bare(&bare, subscribers, messages).await?;
        if complete {
            bare_rate = Some(rate);
            break;
        }
        s.notes.push(format!(
            "bare actix-ws baseline attempt {attempt} stalled: {rate:.0} deliveries/s before it stopped delivering"
        ));
    }
    let name = format!(
        "broadcast deliveries/s, {subscribers} subscribers, history on, 64 B, vs bare actix-ws"
    );
    match bare_rate {
        Some(b) => s.ratio(&name, app_rate, b, 1.0, "msg/s"),
        None => s.ratio_incomplete(
            &name,
            app_rate,
            1.0,
            "msg/s",
            "the bare actix-ws server stalled in both attempts",
        ),
    }

    // Latency at 50k deliveries/s (50 broadcasts/s to 1,000 sockets), the
    // app (recorded messages) and the bare server in turn.
    let secs = if quick { 2 } else { 5 };
    let app_lat = paced_app(&app, &token, &fanout, subscribers, secs).await?;
    let bare = tools::start_self("--serve-ws").await?;
    let bare_lat = paced_bare(&bare, subscribers, secs).await?;
    drop(bare);
    s.ratio_at_most(
        "p99 delivery at 50k deliveries/s (1,000 sockets x 50/s) vs bare actix-ws",
        tools::percentile(&app_lat, 0.99) / 1000.0,
        tools::percentile(&bare_lat, 0.99) / 1000.0,
        1.5,
        "ms",
    );
    s.figure(
        "p50 delivery ms at 50k/s",
        tools::percentile(&app_lat, 0.5) / 1000.0,
    );
    s.figure(
        "bare actix-ws p50 delivery ms at 50k/s",
        tools::percentile(&bare_lat, 0.5) / 1000.0,
    );

    // A reconnect storm: every client comes back at once and recovers the
    // 10 messages it missed.
    let clients = if quick { 1_000 } else { 10_000 };
    let (recovered, took) = reconnect_storm(&app, &token, &fanout, clients, 10).await?;
    s.bound(
        &format!("clients of {clients} reconnecting at once that recovered all 10 missed messages"),
        recovered as f64,
        clients as f64,
        true,
        "clients",
    );
    s.figure(
        &format!("{clients} clients reconnecting at once: s to the last recovered message"),
        took.as_secs_f64(),
    );
    out.push(s);
    Ok(())
}

/// Delivery latencies (µs, sorted) of `secs` s of 50 recorded broadcasts/s
/// to `n` subscribers of the history topic.
async fn paced_app(
    app: &Proc,
    token: &str,
    fanout: &RedisFanout,
    n: usize,
    secs: usize,
) -> anyhow::Result<Vec<f64>> {
    let inbox = Arc::new(Inbox::default());
    let readers = open(n, &url_of(app), Some(token), Some(TOPIC), inbox.clone()).await?;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for _ in 0..(50 * secs) {
        tick.tick().await;
        let m = to(Audience::Topic(TOPIC.into()), 16);
        fanout.publish_recorded(TOPIC, &m, &HISTORY).await?;
    }
    wait_for(&inbox, n * 50 * secs, Duration::from_secs(60)).await?;
    for r in readers {
        r.abort();
    }
    Ok(inbox.take_latencies())
}

/// The same load on the bare server (its `/broadcast`).
async fn paced_bare(bare: &Proc, n: usize, secs: usize) -> anyhow::Result<Vec<f64>> {
    let inbox = Arc::new(Inbox::default());
    let url = format!("ws://127.0.0.1:{}/ws", bare.port);
    let readers = open(n, &url, None, None, inbox.clone()).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = tools::client(Duration::from_secs(30))?;
    let post = format!("http://127.0.0.1:{}/broadcast", bare.port);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for _ in 0..(50 * secs) {
        tick.tick().await;
        let body =
            serde_json::json!({"type": "bench", "data": {"t": now_us(), "p": "x".repeat(16)}})
                .to_string();
        client.post(&post).body(body).send().await?;
    }
    wait_for(&inbox, n * 50 * secs, Duration::from_secs(60)).await?;
    for r in readers {
        r.abort();
    }
    Ok(inbox.take_latencies())
}

/// One client's return: subscribes from `since` and reads until it has the
/// `missed` messages after it, in order. True if it recovered them all.
async fn come_back(
    url: String,
    token: String,
    since: serde_json::Value,
    missed: u64,
) -> anyhow::Result<bool> {
    let mut req = url.into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let reply = subscribe(&mut ws, TOPIC, Some(&since)).await?;
    if reply["recovered"] != true {
        return Ok(false);
    }
    let first = since["offset"].as_u64().unwrap_or(0) + 1;
    let mut want = first;
    while want < first + missed {
        let Some(msg) = ws.next().await else {
            return Ok(false);
        };
        if let Message::Text(t) = msg? {
            let v: serde_json::Value = serde_json::from_str(&t)?;
            if v["topic"] == TOPIC {
                if v["offset"].as_u64() != Some(want) {
                    return Ok(false);
                }
                want += 1;
            }
        }
    }
    Ok(true)
}

/// `clients` subscribe, all disconnect, `missed` messages are published,
/// then all reconnect at once with `since`. Returns how many recovered
/// every message, and the time from the reconnect to the last recovery.
async fn reconnect_storm(
    app: &Proc,
    token: &str,
    fanout: &RedisFanout,
    clients: usize,
    missed: u64,
) -> anyhow::Result<(usize, Duration)> {
    // Where everyone was: one subscriber's position is the topic's.
    let url = url_of(app);
    let mut req = url.as_str().into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let at = subscribe(&mut ws, TOPIC, None).await?;
    drop(ws);
    let since = serde_json::json!({"offset": at["offset"], "epoch": at["epoch"]});
    for _ in 0..missed {
        let m = to(Audience::Topic(TOPIC.into()), 16);
        fanout.publish_recorded(TOPIC, &m, &HISTORY).await?;
    }
    let started = Instant::now();
    // All at once: the handshakes race (the kernel's accept queue and the
    // server's accept rate are part of what is measured).
    let gate = Arc::new(Semaphore::new(1_000));
    let mut returning = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (url, token, since, gate) =
            (url.clone(), token.to_owned(), since.clone(), gate.clone());
        returning.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let back = tokio::time::timeout(
                Duration::from_secs(60),
                come_back(url, token, since, missed),
            )
            .await;
            anyhow::Ok(matches!(back, Ok(Ok(true))))
        });
    }
    let mut recovered = 0;
    while let Some(done) = returning.join_next().await {
        if matches!(done, Ok(Ok(true))) {
            recovered += 1;
        }
    }
    Ok((recovered, started.elapsed()))
}

fn url_of(app: &Proc) -> String {
    format!("ws://127.0.0.1:{}/ws", app.port)
}

/// The floor: what a bare actix-ws server holds per idle connection.
async fn bare_rss_per_conn(n: usize) -> anyhow::Result<f64> {
    let bare = tools::start_self("--serve-ws").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = tools::rss_kib(bare.child.id())?;
    let inbox = Arc::new(Inbox::default());
    let readers = open(
        n,
        &format!("ws://127.0.0.1:{}/ws", bare.port),
        None,
        None,
        inbox,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = tools::rss_kib(bare.child.id())?;
    for r in readers {
        r.abort();
    }
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

async fn throughput_app(
    app: &Proc,
    token: &str,
    fanout: &RedisFanout,
    n: usize,
    messages: usize,
) -> anyhow::Result<f64> {
    let inbox = Arc::new(Inbox::default());
    let readers = open(n, &url_of(app), Some(token), Some(TOPIC), inbox.clone()).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while ws_connections(app.port).await < n as f64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "not all {n} sockets registered within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = now_us();
    {
        let _perf = tools::Perf::attach(app.child.id(), "ws-throughput-1000");
        for _ in 0..messages {
            let m = to(Audience::Topic(TOPIC.into()), 8);
            fanout.publish_recorded(TOPIC, &m, &HISTORY).await?;
        }
        wait_for(&inbox, n * messages, Duration::from_secs(120)).await?;
    }
    let rate = (n * messages) as f64 / ((inbox.last_us() - started).max(1) as f64 / 1e6);
    for r in readers {
        r.abort();
    }
    Ok(rate)
}

/// Deliveries/s of the bare server, and whether every message arrived.
async fn throughput_bare(bare: &Proc, n: usize, messages: usize) -> anyhow::Result<(f64, bool)> {
    let inbox = Arc::new(Inbox::default());
    let readers = open(
        n,
        &format!("ws://127.0.0.1:{}/ws", bare.port),
        None,
        None,
        inbox.clone(),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = tools::client(Duration::from_secs(30))?;
    let url = format!("http://127.0.0.1:{}/broadcast", bare.port);
    let started = now_us();
    for _ in 0..messages {
        let body = serde_json::json!({"type": "bench", "data": {"t": now_us(), "p": "xxxxxxxx"}})
            .to_string();
        client.post(&url).body(body).send().await?;
    }
    let complete = wait_for(&inbox, n * messages, Duration::from_secs(30))
        .await
        .is_ok();
    // Up to the last delivery, so a stall's wait is not counted either way.
    let rate = inbox.count() as f64 / ((inbox.last_us() - started).max(1) as f64 / 1e6);
    for r in readers {
        r.abort();
    }
    Ok((rate, complete))
}

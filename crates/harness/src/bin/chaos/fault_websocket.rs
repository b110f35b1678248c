//! Fault 6: a WebSocket client that never reads and one that floods
//! 10,000 frames: the hub keeps serving others, and its memory stays
//! within what its bounded queues can hold.

use crate::Outcome;
use crate::auth::Keys;
use crate::faults::env;
use crate::tools;
use futures_util::{SinkExt as _, StreamExt as _};
use std::time::{Duration, Instant};
use test_support::{TestDb, TestRedis};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// The hub's per-connection outbound queue (`WS_OUTBOUND_QUEUE`, set below
/// to its default), in messages.
const OUTBOUND_QUEUE: usize = 256;
/// What actix-ws buffers behind the hub's queue: its session channel holds
/// 32 messages, and actix-http stops polling a response body once its write
/// buffer passes 32 KiB (plus the frame being written).
const SESSION_CHANNEL: usize = 32;
const WRITE_BUFFER_KIB: f64 = 32.0 + 17.0;
/// One feed broadcast: a 16 KiB pad in its envelope.
const FEED_KIB: f64 = 16.5;
/// One reply to the flood: an echo of 512 B in its envelope (the unknown
/// types' error envelopes are smaller).
const REPLY_KIB: f64 = 0.7;
/// What the process may grow by besides the per-connection queues: glibc
/// malloc keeps freed memory in its per-thread arenas, the Redis
/// subscriber's read buffer grows to the largest burst of 16 KiB messages it
/// read, and the fan-out channel holds a burst in transit to the hub (up to
/// 8,192 messages, a few hundred here). Growth with both abusers connected
/// but before they filled any queue stayed under 2 MiB; whole runs peaked at
/// 7-9 MiB against about 5 MiB of queues. The bound stays well below what an
/// unbounded slow-client queue alone would hold (every feed message: 48 MiB
/// in the quick run, 64 MiB in the full one), so such a queue fails it.
const SLACK_MIB: f64 = 8.0;

/// The most the two abusive connections can make the server hold: each
/// one's queues full of its largest message. The normal client drains its
/// own; broadcast messages are rendered once and shared, so the slow and the
/// normal client's copies are the same bytes.
fn memory_bound_mib() -> f64 {
    let per_conn =
        |msg_kib: f64| (OUTBOUND_QUEUE + SESSION_CHANNEL) as f64 * msg_kib + WRITE_BUFFER_KIB;
    SLACK_MIB + (per_conn(FEED_KIB) + per_conn(REPLY_KIB)) / 1024.0
}

pub(crate) async fn websocket_abuse(quick: bool) -> anyhow::Result<Outcome> {
    let keys = Keys::start().await?;
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    let mut env = env(db.url(), redis.url(), redis.prefix(), &keys, None);
    env.push(("WS_OUTBOUND_QUEUE", OUTBOUND_QUEUE.to_string()));
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
    let open = |uid: &str| {
        let req = connect(uid);
        async move {
            let (ws, _) = tokio::time::timeout(
                Duration::from_secs(10),
                tokio_tungstenite::connect_async(req?),
            )
            .await??;
            anyhow::Ok(ws)
        }
    };
    let mut normal = open("normal").await?;
    let mut slow = open("slow").await?;
    let mut flood = open("flood").await?;
    for ws in [&mut normal, &mut slow] {
        ws.send(Message::text(
            serde_json::json!({"type": "subscribe", "data": {"topic": "public:feed"}}).to_string(),
        ))
        .await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = serve.child.id();
    let rss_before = tools::rss_kib(pid)?;
    let mut rss_peak = rss_before;

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
    let broadcasts: usize = if quick { 3_000 } else { 4_000 };
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
                disconnect: None,
                position: None,
                acked: None,
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
        let reply_by = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(reply_by, replies.recv()).await {
                Ok(Some(got)) if got == id => break,
                Ok(Some(_)) => continue,
                _ => anyhow::bail!("the normal client stopped being served"),
            }
        }
        worst = worst.max(t.elapsed());
        rss_peak = rss_peak.max(tools::rss_kib(pid)?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::timeout(Duration::from_secs(60), publisher).await??;
    // The normal client, which reads, gets every broadcast.
    let feed_deadline = Instant::now() + Duration::from_secs(10);
    while feed_seen.load(std::sync::atomic::Ordering::Relaxed) < broadcasts
        && Instant::now() < feed_deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reader.abort();
    let feed = feed_seen.load(std::sync::atomic::Ordering::Relaxed);
    let (flooded, flood) = tokio::time::timeout(Duration::from_secs(60), flooding).await??;
    rss_peak = rss_peak.max(tools::rss_kib(pid)?);
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
    // What is retained is measured once both abusers are gone (the flooder
    // hangs up now, the slow client was closed above), over the next second
    // (the server notices the hang-up and drops that connection's queues):
    // the lowest RSS then, since freed memory reaches the OS only as the
    // allocator trims. Measured while the flooder was still connected, it
    // counted the flooder's own queues as "retained".
    drop(flood);
    let mut rss_after = tools::rss_kib(pid)?;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss_after = rss_after.min(tools::rss_kib(pid)?);
    }
    let growth_mib = rss_peak.saturating_sub(rss_before) as f64 / 1024.0;
    let retained_mib = rss_after.saturating_sub(rss_before) as f64 / 1024.0;
    let bound_mib = memory_bound_mib();
    let mut o = Outcome {
        sent: flooded,
        processed: probes,
        ..Outcome::default()
    };
    if flooded < frames {
        o.errors += 1;
        o.notes.push(format!(
            "the flood stopped after {flooded} of {frames} frames"
        ));
    }
    if feed != broadcasts {
        o.errors += 1;
        o.notes.push(format!(
            "the normal client got {feed} of {broadcasts} feed messages"
        ));
    }
    if worst > Duration::from_secs(1) {
        o.errors += 1;
        o.notes.push(format!(
            "an echo took {} ms: the hub stalled for others",
            worst.as_millis()
        ));
    }
    // What an unbounded queue for the slow client would have held.
    let unbounded_mib = broadcasts as f64 * FEED_KIB / 1024.0;
    if bound_mib >= unbounded_mib / 2.0 {
        o.errors += 1;
        o.notes.push(format!(
            "the bound ({bound_mib:.1} MiB) cannot tell a bounded queue from an unbounded one ({unbounded_mib:.1} MiB)"
        ));
    }
    if retained_mib > SLACK_MIB {
        o.errors += 1;
        o.notes.push(format!(
            "{retained_mib:.1} MiB still held after the abusers were dealt with"
        ));
    }
    if growth_mib > bound_mib {
        o.errors += 1;
        o.notes.push(format!(
            "RSS grew {growth_mib:.1} MiB, more than its queues can hold ({bound_mib:.1} MiB)"
        ));
    }
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
        "normal client: {probes} echo probes, worst {} ms, {feed} feed messages; RSS peak +{growth_mib:.1} MiB (bound {bound_mib:.1} MiB: {SLACK_MIB} MiB slack + queues), +{retained_mib:.1} MiB at the end; {slow_note}",
        worst.as_millis()
    ));
    Ok(o)
}

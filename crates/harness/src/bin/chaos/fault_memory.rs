//! Scenario 12: floods meant to exhaust the server's memory. Every request
//! with a method a client invented (20 kB tokens, each once a series of
//! its own on `/metrics`), then one WebSocket that sends 64 KiB echoes and
//! never reads a reply (once, every spawned reply task held its 64 KiB for
//! up to the idle timeout). The server's RSS and `/metrics` stay bounded,
//! and a bystander is served all along.

use crate::Outcome;
use crate::auth::Keys;
use crate::faults::env;
use crate::tools;
use futures_util::{SinkExt as _, StreamExt as _};
use std::time::{Duration, Instant};
use test_support::{TestDb, TestRedis};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// The idle timeout the scenario's server runs with (`WS_IDLE_TIMEOUT_SECS`):
/// how long a socket that drains nothing is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(6);
/// What the server may grow by over the whole scenario: allocator arenas,
/// the metrics registry's few new series, and one non-reading socket's
/// bounded buffers (its queue's 1 MiB budget, 8 replies waiting for it,
/// actix-ws' 64 frames, the kernel's socket buffers) with room to spare.
/// Before the bounds, 3,000 invented methods alone grew it by 135 MiB and
/// the socket by gigabytes.
const RSS_BOUND_MIB: f64 = 48.0;
/// What `/metrics` may grow by: the handful of series the scenario's
/// requests add (every method label `other`).
const METRICS_BOUND_KIB: usize = 16;
/// What the server may read from a client that never reads before it stops
/// reading it (its own bounded buffers and the kernel's, which autotune up
/// to `tcp_rmem`'s maximum).
fn read_bound_mib() -> f64 {
    let rmem_max = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(6.0 * 1024.0 * 1024.0);
    let wmem_max = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(4.0 * 1024.0 * 1024.0);
    // Both directions' kernel buffers, the hub's budget and replies in
    // flight (8 + 64 frames of 64 KiB), plus slack.
    (2.0 * (rmem_max + wmem_max)) / (1024.0 * 1024.0) + 1.0 + 72.0 * 64.0 / 1024.0 + 4.0
}

async fn metrics_len(client: &reqwest::Client, port: u16) -> anyhow::Result<usize> {
    Ok(client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?
        .len())
}

/// One request with `method` on a fresh connection; the status line's code.
async fn raw_request(port: u16, method: &str) -> anyhow::Result<u16> {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let head =
        format!("{method} /api/v1/me HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    tcp.write_all(head.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await??;
    let line = String::from_utf8_lossy(&answer);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status line"))
}

pub(crate) async fn memory_floods(quick: bool) -> anyhow::Result<Outcome> {
    let keys = Keys::start().await?;
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    let mut e = env(db.url(), redis.url(), redis.prefix(), &keys, None);
    e.push(("WS_IDLE_TIMEOUT_SECS", IDLE_TIMEOUT.as_secs().to_string()));
    e.push(("WS_PING_INTERVAL_SECS", "2".into()));
    let (serve, _) = tools::start_app("serve", &e).await?;
    let (port, pid) = (serve.port, serve.child.id());
    let client = tools::client(Duration::from_secs(10))?;
    let mut o = Outcome::default();
    let rss_before = tools::rss_kib(pid)?;
    let mut rss_peak = rss_before;
    let metrics_before = metrics_len(&client, port).await?;

    // 1. Methods a client invents: 20 kB each, all different.
    let requests: usize = if quick { 1_000 } else { 3_000 };
    let mut refused = 0;
    for i in 0..requests {
        let method = format!("X{i:05}{}", "M".repeat(20_000));
        let status = raw_request(port, &method).await?;
        if (400..500).contains(&status) {
            refused += 1;
        }
        if i % 100 == 0 {
            rss_peak = rss_peak.max(tools::rss_kib(pid)?);
        }
    }
    o.sent += requests;
    o.processed += refused;
    if refused != requests {
        o.errors += 1;
        o.notes.push(format!(
            "{} invented methods were not refused with a 4xx",
            requests - refused
        ));
    }
    let metrics_after = metrics_len(&client, port).await?;
    let metrics_growth_kib = metrics_after.saturating_sub(metrics_before) / 1024;
    if metrics_growth_kib > METRICS_BOUND_KIB {
        o.errors += 1;
    }
    o.notes.push(format!(
        "{requests} invented methods: /metrics +{metrics_growth_kib} KiB (bound {METRICS_BOUND_KIB})"
    ));

    // 2. A socket that sends 64 KiB echoes and never reads.
    let url = format!("ws://127.0.0.1:{port}/ws");
    let request = |uid: &str| -> anyhow::Result<_> {
        let mut req = url.clone().into_client_request()?;
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", keys.token(uid, None, None)?).parse()?,
        );
        Ok(req)
    };
    let (mut flooder, _) = tokio_tungstenite::connect_async(request("flooder")?).await?;
    let (mut bystander, _) = tokio_tungstenite::connect_async(request("bystander")?).await?;
    let frame = serde_json::json!({"type": "echo", "data": "z".repeat(64 * 1024 - 64)}).to_string();
    let flood_for = if quick {
        Duration::from_secs(8)
    } else {
        Duration::from_secs(20)
    };
    let started = Instant::now();
    let flooding = tokio::spawn(async move {
        let mut written = 0_usize;
        // A write waits at most until the server closes a socket that
        // drained nothing for its idle timeout (and shuts it a second on).
        let write_limit = IDLE_TIMEOUT * 3;
        let ended = loop {
            if started.elapsed() > flood_for {
                break "still open when the flood ended";
            }
            match tokio::time::timeout(write_limit, flooder.send(Message::text(frame.clone())))
                .await
            {
                Ok(Ok(())) => written += frame.len(),
                Ok(Err(_)) => break "closed by the server",
                Err(_) => break "a write hung past the idle timeout",
            }
        };
        (written, ended, started.elapsed())
    });
    // The bystander is served while the flood runs.
    let mut worst = Duration::ZERO;
    let mut probes = 0;
    while !flooding.is_finished() && started.elapsed() < flood_for + IDLE_TIMEOUT * 4 {
        let t = Instant::now();
        let id = format!("probe-{probes}");
        bystander
            .send(Message::text(
                serde_json::json!({"type": "echo", "id": id}).to_string(),
            ))
            .await?;
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), bystander.next())
                .await
                .map_err(|_| anyhow::anyhow!("the bystander was not answered in 5 s"))?;
            match msg {
                Some(Ok(Message::Text(t))) if t.contains(&id) => break,
                Some(Ok(_)) => {}
                _ => anyhow::bail!("the bystander's socket ended"),
            }
        }
        probes += 1;
        worst = worst.max(t.elapsed());
        rss_peak = rss_peak.max(tools::rss_kib(pid)?);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (written, ended, took) = tokio::time::timeout(IDLE_TIMEOUT * 4, flooding).await??;
    rss_peak = rss_peak.max(tools::rss_kib(pid)?);
    let read_mib = written as f64 / (1024.0 * 1024.0);
    let bound = read_bound_mib();
    if read_mib > bound {
        o.errors += 1;
    }
    if ended == "a write hung past the idle timeout" {
        o.errors += 1;
    }
    if worst > Duration::from_secs(1) {
        o.errors += 1;
    }
    o.sent += 1;
    o.processed += probes;
    o.notes.push(format!(
        "never-reading socket: the server took {read_mib:.1} MiB (bound {bound:.0}) then stopped reading; {ended} after {:.1} s; bystander {probes} echoes, worst {} ms",
        took.as_secs_f64(),
        worst.as_millis()
    ));
    let growth_mib = rss_peak.saturating_sub(rss_before) as f64 / 1024.0;
    if growth_mib > RSS_BOUND_MIB {
        o.errors += 1;
    }
    o.notes.push(format!(
        "RSS peak +{growth_mib:.1} MiB (bound {RSS_BOUND_MIB:.0})"
    ));
    Ok(o)
}

//! Scenario 5: new users at a fixed rate -> welcome mails accepted by a real
//! SMTP server, across `app serve` and `app worker` processes.

use crate::auth::Keys;
use crate::report::Scenario;
use crate::tools;
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use test_support::SmtpSink;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Creates `rate * secs` users at `rate`/s; returns each mail's latency (ms)
/// and how many arrived within `grace` after the last request.
async fn phase(
    keys: &Keys,
    smtp: &SmtpSink,
    port: u16,
    tag: &str,
    rate: u32,
    secs: u32,
    grace: Duration,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let n = (rate * secs) as usize;
    let tokens: Vec<(String, String)> = (0..n)
        .map(|i| {
            let email = format!("{tag}-{i}@bench.example");
            keys.token(&format!("{tag}-{i}"), Some(&email), Some("Bench User"))
                .map(|t| (email, t))
        })
        .collect::<anyhow::Result<_>>()?;
    let before = smtp.messages().len();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/v1/me");
    let mut sent: HashMap<String, u64> = HashMap::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    for (email, token) in tokens {
        tick.tick().await;
        sent.insert(email, now_ns());
        let (c, u) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            c.patch(u)
                .bearer_auth(token)
                .json(&serde_json::json!({}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for t in tasks {
        let status = t.await??;
        anyhow::ensure!(status == 201, "PATCH /me answered {status}");
    }
    let last_sent = Instant::now();
    while smtp.messages().len() < before + n
        && last_sent.elapsed() < grace + Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline_ns = now_ns() - last_sent.elapsed().as_nanos() as u64 + grace.as_nanos() as u64;
    let mut latencies = Vec::with_capacity(n);
    let mut in_time = 0;
    for m in smtp.messages() {
        if let Some(t0) = m.rcpt_tos.first().and_then(|r| sent.get(r)) {
            latencies.push((m.received_ns.saturating_sub(*t0)) as f64 / 1e6);
            if m.received_ns <= deadline_ns {
                in_time += 1;
            }
        }
    }
    anyhow::ensure!(
        latencies.len() == n,
        "{tag}: {} of {n} mails arrived",
        latencies.len()
    );
    latencies.sort_by(f64::total_cmp);
    Ok((latencies, in_time))
}

pub(crate) async fn run(quick: bool, out: &mut Vec<Scenario>) -> anyhow::Result<()> {
    let keys = Keys::start().await?;
    let db = test_support::TestDb::new().await;
    let redis = test_support::TestRedis::new().await;
    let smtp = SmtpSink::start();
    let mut env = crate::http::app_env(&db, &redis, &keys);
    env.push(("SMTP_URL", smtp.url()));
    env.push(("MAIL_FROM", "Bench <bench@trellis.example>".into()));
    env.push(("WORKER_CONCURRENCY", "32".into()));
    let (serve, _) = tools::start_app("serve", &env).await?;
    let (_worker, _) = tools::start_app("worker", &env).await?;

    let secs = if quick { 3 } else { 10 };
    let (lat, _) = phase(
        &keys,
        &smtp,
        serve.port,
        "steady",
        50,
        secs,
        Duration::from_secs(2),
    )
    .await?;
    let mut s = Scenario::new("5. welcome pipeline");
    s.bound(
        "new user -> mail accepted by SMTP, p99 at 50 users/s",
        tools::percentile(&lat, 0.99),
        250.0,
        false,
        "ms",
    );
    s.figure("p50 ms at 50/s", tools::percentile(&lat, 0.5));
    s.figure("users at 50/s", lat.len() as f64);

    // The highest rate whose mails all arrive within a second of the last request.
    let mut sustained = 50.0;
    for rate in [100, 200, 400, 800] {
        let (lat, in_time) = phase(
            &keys,
            &smtp,
            serve.port,
            &format!("ramp{rate}"),
            rate,
            if quick { 2 } else { 5 },
            Duration::from_secs(1),
        )
        .await?;
        s.figure(
            &format!("p99 ms at {rate}/s"),
            tools::percentile(&lat, 0.99),
        );
        if in_time < lat.len() {
            s.notes.push(format!("at {rate} users/s, {} of {} mails were still queued a second after the last sign-up", lat.len() - in_time, lat.len()));
            break;
        }
        sustained = f64::from(rate);
    }
    s.figure(
        "highest rate sustained without backlog (users/s)",
        sustained,
    );
    out.push(s);
    Ok(())
}

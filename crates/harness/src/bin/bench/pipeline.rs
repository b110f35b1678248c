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

/// What one fixed-rate phase saw.
struct Phase {
    /// Users created (sign-ups sent).
    sent: usize,
    /// Sign-ups that did not answer 201 (an error or another status).
    refused: usize,
    /// Each arrived mail's latency from its sign-up, ms, sorted.
    latencies: Vec<f64>,
    /// Mails accepted by SMTP within `grace` after the last sign-up.
    in_time: usize,
}

impl Phase {
    /// Every sign-up answered and every mail arrived within the grace time.
    fn sustained(&self) -> bool {
        self.refused == 0 && self.latencies.len() == self.sent && self.in_time == self.sent
    }
}

/// Creates `rate * secs` users at `rate`/s; returns what arrived: each
/// mail's latency and how many arrived within `grace` after the last
/// request. Waits at most `grace` + 20 s for stragglers; a phase whose
/// mails do not all arrive is reported as such, not as an error.
async fn phase(
    keys: &Keys,
    smtp: &SmtpSink,
    port: u16,
    tag: &str,
    rate: u32,
    secs: u32,
    grace: Duration,
) -> anyhow::Result<Phase> {
    let n = (rate * secs) as usize;
    let uids: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    let emails: Vec<String> = (0..n).map(|i| format!("{tag}-{i}@bench.example")).collect();
    let tokens: Vec<(String, String)> = (0..n)
        .map(|i| {
            keys.token(&uids[i], Some(&emails[i]), Some("Bench User"))
                .map(|t| (emails[i].clone(), t))
        })
        .collect::<anyhow::Result<_>>()?;
    let client = tools::client(Duration::from_secs(10))?;
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
    let last_sent = Instant::now();
    let mut refused = 0;
    for t in tasks {
        if !matches!(t.await, Ok(Ok(201))) {
            refused += 1;
        }
    }
    // Distinct recipients of this phase (a duplicate must not hide a loss).
    let arrived = |smtp: &SmtpSink| {
        smtp.messages()
            .iter()
            .filter_map(|m| {
                m.rcpt_tos
                    .first()
                    .filter(|r| sent.contains_key(*r))
                    .cloned()
            })
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    while arrived(smtp) < n - refused && last_sent.elapsed() < grace + Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline_ns = now_ns() - last_sent.elapsed().as_nanos() as u64 + grace.as_nanos() as u64;
    let mut latencies = Vec::with_capacity(n);
    let mut in_time = 0;
    let mut seen = std::collections::HashSet::new();
    for m in smtp.messages() {
        let Some((rcpt, t0)) = m.rcpt_tos.first().and_then(|r| Some((r, sent.get(r)?))) else {
            continue;
        };
        // The first mail to each user counts; a second one is not a delivery.
        if !seen.insert(rcpt.clone()) {
            continue;
        }
        latencies.push((m.received_ns.saturating_sub(*t0)) as f64 / 1e6);
        if m.received_ns <= deadline_ns {
            in_time += 1;
        }
    }
    latencies.sort_by(f64::total_cmp);
    Ok(Phase {
        sent: n,
        refused,
        latencies,
        in_time,
    })
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
    let steady = phase(
        &keys,
        &smtp,
        serve.port,
        "steady",
        50,
        secs,
        Duration::from_secs(2),
    )
    .await?;
    let lat = &steady.latencies;
    let mut s = Scenario::new("5. welcome pipeline");
    s.bound(
        "new user -> mail accepted by SMTP, p99 at 50 users/s",
        tools::percentile(lat, 0.99),
        250.0,
        false,
        "ms",
    );
    s.bound(
        &format!(
            "welcome mails accepted at 50 users/s (of {} sign-ups)",
            steady.sent
        ),
        lat.len() as f64,
        steady.sent as f64,
        true,
        "mails",
    );
    s.figure("p50 ms at 50/s", tools::percentile(lat, 0.5));
    if steady.refused > 0 {
        s.notes.push(format!(
            "at 50 users/s, {} of {} sign-ups did not answer 201",
            steady.refused, steady.sent
        ));
    }

    // The highest rate whose mails all arrive within a second of the last
    // request. A rate that is not sustained ends the ramp; it does not end
    // the benchmark.
    let mut sustained = if steady.sustained() { 50.0 } else { 0.0 };
    for rate in [100, 200, 400, 800] {
        if sustained == 0.0 {
            break;
        }
        let p = phase(
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
            tools::percentile(&p.latencies, 0.99),
        );
        if !p.sustained() {
            s.notes.push(format!(
                "{rate} users/s not sustained: of {} sign-ups, {} answered 201, {} mails arrived within 21 s and {} within a second of the last sign-up",
                p.sent,
                p.sent - p.refused,
                p.latencies.len(),
                p.in_time
            ));
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

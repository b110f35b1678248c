//! `just chaos`: the real app processes, Postgres, Redis and an SMTP server on
//! loopback, under faults and bad input. One line per scenario with its
//! figures; any lost data or wrong answer fails the run (exit status 1).
//!
//! `--quick` is the short version CI runs (debug build, shorter outages).

#![expect(
    clippy::print_stdout,
    reason = "a command-line harness reports on stdout"
)]

#[path = "../bench/auth.rs"]
mod auth;
mod bad_input;
mod faults;
#[path = "../bench/tools.rs"]
#[expect(dead_code, reason = "shared with the benchmark, which uses the rest")]
mod tools;

use std::time::Instant;

/// What one scenario found.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) sent: usize,
    pub(crate) processed: usize,
    pub(crate) lost: usize,
    pub(crate) duplicated: usize,
    pub(crate) errors: usize,
    pub(crate) notes: Vec<String>,
}

impl Outcome {
    fn passed(&self) -> bool {
        self.lost == 0 && self.errors == 0
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only: Vec<u32> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|l| l.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| (1..=8).collect());
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let mut failed = 0;
    type Scenario<'a> = (
        u32,
        &'a str,
        std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Outcome>> + 'a>>,
    );
    let scenarios: Vec<Scenario<'_>> = vec![
        (
            1,
            "worker SIGKILLed twice during 10,000 jobs",
            Box::pin(faults::killed_workers(quick)),
        ),
        (
            2,
            "Redis restarted while users sign up",
            Box::pin(faults::redis_restart(quick)),
        ),
        (
            3,
            "Postgres connections killed under load",
            Box::pin(faults::postgres_killed(quick)),
        ),
        (
            4,
            "SIGTERM to serve under HTTP and WebSocket load",
            Box::pin(faults::sigterm_under_load(quick)),
        ),
        (
            5,
            "SMTP server unreachable",
            Box::pin(faults::smtp_down(quick)),
        ),
        (
            6,
            "slow WebSocket client and a 10,000-frame flood",
            Box::pin(faults::websocket_abuse(quick)),
        ),
        (
            7,
            "bad HTTP input on every route",
            Box::pin(bad_input::http(quick)),
        ),
        (
            8,
            "bad WebSocket input",
            Box::pin(bad_input::websocket(quick)),
        ),
    ];
    for (n, name, run) in scenarios {
        if !only.contains(&n) {
            continue;
        }
        let t = Instant::now();
        let line = match rt.block_on(run) {
            Ok(o) => {
                let verdict = if o.passed() { "PASS" } else { "FAIL" };
                if !o.passed() {
                    failed += 1;
                }
                let notes = if o.notes.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", o.notes.join("; "))
                };
                format!(
                    "{verdict} {n}. {name}: sent={} processed={} lost={} duplicated={} errors={}{notes} [{:.1} s]",
                    o.sent,
                    o.processed,
                    o.lost,
                    o.duplicated,
                    o.errors,
                    t.elapsed().as_secs_f64()
                )
            }
            Err(e) => {
                failed += 1;
                format!(
                    "FAIL {n}. {name}: the scenario could not run: {e:#} [{:.1} s]",
                    t.elapsed().as_secs_f64()
                )
            }
        };
        println!("{line}");
    }
    println!(
        "chaos: {} failed, {:.0} s",
        failed,
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

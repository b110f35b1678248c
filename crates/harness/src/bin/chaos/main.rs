//! `just chaos`: the real app processes, Postgres, Redis and an SMTP server on
//! loopback, under faults and bad input. One line per scenario with its
//! figures; any lost data or wrong answer fails the run (exit status 1).
//!
//! `--quick` is the short version CI runs (debug build, shorter outages).

#![expect(
    clippy::print_stdout,
    reason = "a command-line harness reports on stdout"
)]

mod bad_input;
mod bad_websocket;
mod fault_failover;
mod fault_idle;
mod fault_memory;
mod fault_outage;
mod fault_redis;
mod fault_saga;
mod fault_sigterm;
mod fault_websocket;
mod faults;
mod probe;

pub(crate) use harness::{auth, tools};

use std::time::Instant;

/// What one scenario found.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) sent: usize,
    pub(crate) processed: usize,
    pub(crate) lost: usize,
    pub(crate) duplicated: usize,
    pub(crate) errors: usize,
    /// How many duplicates the scenario's guarantee allows: 0 where a user
    /// must get exactly one mail; a justified bound for at-least-once jobs.
    pub(crate) allowed_duplicates: usize,
    pub(crate) notes: Vec<String>,
}

impl Outcome {
    fn passed(&self) -> bool {
        self.lost == 0 && self.errors == 0 && self.duplicated <= self.allowed_duplicates
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
        .unwrap_or_else(|| (1..=16).collect());
    anyhow::ensure!(
        !only.is_empty() && only.iter().all(|n| (1..=16).contains(n)),
        "--only takes scenario numbers from 1 to 16, comma-separated"
    );
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let mut failed = 0;
    // Each scenario's time bound (full, quick): well above what it needs,
    // so only a hang reaches it. A scenario that hits it fails, and the
    // run goes on with the next one (its processes are stopped on drop).
    type Scenario<'a> = (
        u32,
        &'a str,
        (u64, u64),
        std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Outcome>> + 'a>>,
    );
    let scenarios: Vec<Scenario<'_>> = vec![
        (
            1,
            "worker SIGKILLed twice during 10,000 jobs",
            (300, 120),
            Box::pin(faults::killed_workers(quick)),
        ),
        (
            2,
            "Redis restarted while users sign up",
            (240, 120),
            Box::pin(fault_redis::redis_restart(quick)),
        ),
        (
            3,
            "Postgres connections killed under load",
            (90, 60),
            Box::pin(faults::postgres_killed(quick)),
        ),
        (
            4,
            "SIGTERM to serve under HTTP and WebSocket load",
            (90, 60),
            Box::pin(fault_sigterm::sigterm_under_load(quick)),
        ),
        (
            5,
            "SMTP server unreachable",
            (240, 150),
            Box::pin(faults::smtp_down(quick)),
        ),
        (
            6,
            "slow WebSocket client and a 10,000-frame flood",
            (120, 90),
            Box::pin(fault_websocket::websocket_abuse(quick)),
        ),
        (
            7,
            "bad HTTP input on every route",
            (120, 90),
            Box::pin(bad_input::http(quick)),
        ),
        (
            8,
            "bad WebSocket input",
            (90, 60),
            Box::pin(bad_websocket::websocket(quick)),
        ),
        (
            9,
            "welcome consumers down while sign-ups pass the stream cap",
            (240, 120),
            Box::pin(fault_outage::long_consumer_outage(quick)),
        ),
        (
            10,
            "worker SIGKILLed while sending welcome mails",
            (180, 120),
            Box::pin(fault_outage::killed_while_sending(quick)),
        ),
        (
            11,
            "worker SIGKILLed in the middle of account-deletion sagas",
            (180, 120),
            Box::pin(fault_saga::killed_mid_saga(quick)),
        ),
        (
            12,
            "memory floods: invented methods, a socket that never reads",
            (180, 120),
            Box::pin(fault_memory::memory_floods(quick)),
        ),
        (
            13,
            "Redis closes every client connection every 5 s",
            (120, 90),
            Box::pin(fault_idle::redis_closes_connections(quick)),
        ),
        (
            14,
            "Postgres ends sessions idle for 2 s, requests in bursts 3 s apart",
            (120, 90),
            Box::pin(fault_idle::postgres_idle_timeout(quick)),
        ),
        (
            15,
            "Redis primary SIGKILLed behind Sentinel while users sign up",
            (150, 120),
            Box::pin(fault_failover::sentinel_failover(quick)),
        ),
        (
            16,
            "PgBouncer killed and restarted mid-burst",
            (120, 90),
            Box::pin(fault_failover::pgbouncer_restart(quick)),
        ),
    ];
    for (n, name, (full_secs, quick_secs), run) in scenarios {
        if !only.contains(&n) {
            continue;
        }
        let limit = std::time::Duration::from_secs(if quick { quick_secs } else { full_secs });
        let t = Instant::now();
        let line = match rt.block_on(async { tokio::time::timeout(limit, run).await }) {
            Ok(Ok(o)) => {
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
            Ok(Err(e)) => {
                failed += 1;
                format!(
                    "FAIL {n}. {name}: the scenario could not run: {e:#} [{:.1} s]",
                    t.elapsed().as_secs_f64()
                )
            }
            Err(_) => {
                failed += 1;
                format!(
                    "FAIL {n}. {name}: timed out: still running after its {} s bound; stopped [{:.1} s]",
                    limit.as_secs(),
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

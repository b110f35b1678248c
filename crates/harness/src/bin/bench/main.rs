//! `just bench`: every performance scenario on loopback, each figure next to a
//! baseline measured in the same run, written to `bench/results/<date>.json`
//! and `.md`.
//!
//! Build in release first (`just bench` does): `cargo build --release
//! --workspace --bins`, then run `target/release/bench`.
//! `--only 1,3` runs some scenarios; `--quick` shortens every run (CI smoke).

#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line benchmark reports on stdout"
)]

mod baselines;
mod cloud;
mod durability;
mod http;
mod pipeline;
mod queue;
mod report;
mod streams;
mod ws;

pub(crate) use harness::{auth, tools};

use report::Scenario;
use std::collections::BTreeSet;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // Helper modes: this binary also serves the baselines.
    match args.get(1).map(String::as_str) {
        Some("--serve-hello") => return baselines::serve_hello(args[2].parse()?),
        Some("--serve-ws") => return baselines::serve_ws(args[2].parse()?),
        Some("--queue-worker") => return queue::helper("worker", &args[2..]),
        Some("--queue-producer") => return queue::helper("producer", &args[2..]),
        _ => {}
    }
    let quick = args.iter().any(|a| a == "--quick");
    let only: BTreeSet<u32> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|list| {
            list.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .unwrap_or_else(|| (1..=9).collect());
    anyhow::ensure!(
        !only.is_empty() && only.iter().all(|n| (1..=9).contains(n)),
        "--only takes scenario numbers from 1 to 9, comma-separated"
    );
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(only, quick))
}

async fn run(only: BTreeSet<u32>, quick: bool) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let secs = if quick { 3 } else { 10 };
    let (jobs, events) = if quick {
        (10_000, 10_000)
    } else {
        (100_000, 100_000)
    };
    let mut results: Vec<Scenario> = Vec::new();
    let want = |n| only.contains(&n);
    // A group that fails is recorded as a failed check; the others still run.
    let record = |results: &mut Vec<Scenario>, name: &str, r: anyhow::Result<()>| {
        if let Err(e) = r {
            eprintln!("{name} failed: {e:#}");
            let mut s = Scenario::new(name);
            s.failed(&format!("{e:#}"));
            results.push(s);
        }
    };
    if want(1) || want(2) || want(7) {
        eprintln!("== HTTP (scenarios 1, 2, 7)");
        let r = http::run(secs, &mut results).await;
        record(&mut results, "1, 2, 7. HTTP", r);
    }
    if want(3) {
        eprintln!("== queue (scenario 3)");
        let r = queue::run(jobs, &mut results).await;
        record(&mut results, "3. job queue", r);
    }
    if want(4) {
        eprintln!("== streams (scenario 4)");
        let r = streams::run(events, &mut results).await;
        record(&mut results, "4. event streams", r);
    }
    if want(5) {
        eprintln!("== pipeline (scenario 5)");
        let r = pipeline::run(quick, &mut results).await;
        record(&mut results, "5. welcome pipeline", r);
    }
    if want(6) {
        eprintln!("== WebSocket (scenario 6)");
        let r = ws::run(quick, &mut results).await;
        record(&mut results, "6. WebSocket", r);
    }
    if want(8) {
        eprintln!("== managed cloud: TLS and a transaction pooler (scenario 8)");
        let r = cloud::run(secs, &mut results).await;
        record(&mut results, "8. managed cloud", r);
    }
    if want(9) {
        eprintln!("== waiting for a replica (scenario 9)");
        let r = durability::run(quick, &mut results).await;
        record(&mut results, "9. waiting for a replica", r);
    }
    results.sort_by(|a, b| a.name.cmp(&b.name));

    let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    // The app binary is the one built with this harness (same profile).
    let build = if cfg!(debug_assertions) {
        "DEBUG build (not comparable)"
    } else {
        "release build"
    };
    let header = format!(
        "Trellis benchmarks, {date}: {cores} cores ({cpu}), {build}, loopback; `just bench`{}. Every ratio is to a baseline measured in the same run.",
        if quick { " --quick" } else { "" }
    );
    let md = report::markdown(&results, &header);
    println!("{md}");
    let missed = results
        .iter()
        .flat_map(|s| &s.checks)
        .filter(|c| !c.pass)
        .count();
    eprintln!("{missed} checks missed their target");
    // Only a full run is a record; a partial or quick run would overwrite
    // the day's full results with a fragment.
    let full = !quick && only.len() == 9 && !cfg!(debug_assertions);
    if !full {
        eprintln!("partial or quick run: bench/results not written");
        return Ok(());
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/results");
    std::fs::create_dir_all(&dir)?;
    let json = serde_json::json!({
        "date": date,
        "cores": cores,
        "cpu": cpu,
        "quick": quick,
        "elapsed_secs": started.elapsed().as_secs_f64(),
        "scenarios": results,
    });
    std::fs::write(
        dir.join(format!("{date}.json")),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    std::fs::write(dir.join(format!("{date}.md")), &md)?;
    eprintln!(
        "wrote bench/results/{date}.json and .md in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

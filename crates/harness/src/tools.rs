//! Running load tools and the app, and reading what they report.

use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a load tool or `psql` may run before it is killed: the longest
/// measurement is 10 s of load, so two minutes means it hung.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs a command, returning stdout; fails with its stderr, or if it runs
/// longer than [`TOOL_TIMEOUT`] (it is killed then).
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    run_for(cmd, TOOL_TIMEOUT)
}

/// [`run`] with its own time limit.
pub fn run_for(cmd: &mut Command, limit: Duration) -> anyhow::Result<String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    // Drain both pipes on their own threads, so a chatty tool cannot block
    // on a full pipe while we wait for it.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{cmd:?} did not finish within {} s; killed",
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&stderr));
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// `wrk` requests/s (and p99 latency in ms) for `url`.
pub fn wrk(
    url: &str,
    connections: u32,
    secs: u32,
    headers: &[String],
    script: Option<&Path>,
) -> anyhow::Result<(f64, f64)> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t2",
        &format!("-c{connections}"),
        &format!("-d{secs}s"),
        "--latency",
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    cmd.arg(url);
    let out = run(&mut cmd)?;
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no Requests/sec in wrk output:\n{out}"))?;
    let non2xx = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .map(str::trim);
    if let Some(n) = non2xx {
        bail!("wrk saw {n} non-2xx responses for {url}:\n{out}");
    }
    // "Socket errors: connect 0, read 0, write 0, timeout 0": any error
    // means requests that were not counted.
    if let Some(errors) = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .filter(|e| e.split(',').any(|p| !p.trim().ends_with(" 0")))
    {
        bail!("wrk saw socket errors for {url}: {errors}\n{out}");
    }
    let p99 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map_or(f64::NAN, |v| parse_wrk_duration(v.trim()));
    Ok((rps, p99))
}

fn parse_wrk_duration(s: &str) -> f64 {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => f64::NAN,
    }
}

/// `pgbench` transactions/s.
pub fn pgbench(db_url: &str, args: &[&str]) -> anyhow::Result<f64> {
    let out = run(Command::new("pgbench").args(args).arg(db_url))?;
    out.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no tps in pgbench output:\n{out}"))
}

/// `redis-benchmark --csv` requests/s of the first test.
pub fn redis_benchmark(args: &[&str]) -> anyhow::Result<f64> {
    let (host, port) = redis_host_port();
    let out = run(Command::new("redis-benchmark")
        .args(["-h", &host, "-p", &port, "--csv"])
        .args(args))?;
    // The test name may itself hold commas: rps is the 7th field from the end.
    out.lines()
        .filter(|l| !l.starts_with("\"test\""))
        .find_map(|l| {
            let fields: Vec<&str> = l.split(',').collect();
            fields
                .len()
                .checked_sub(7)
                .and_then(|i| fields.get(i))
                .copied()
        })
        .map(|v| v.trim_matches('"'))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no rps in redis-benchmark output:\n{out}"))
}

/// The host and port of the Redis the app and the tests use
/// (`TEST_REDIS_URL`, as in test-support), for the command-line baselines.
pub fn redis_host_port() -> (String, String) {
    let url = std::env::var("TEST_REDIS_URL").unwrap_or_default();
    let rest = url.strip_prefix("redis://").unwrap_or_default();
    let authority = rest.split('/').next().unwrap_or_default();
    let hostport = authority.rsplit('@').next().unwrap_or_default();
    match hostport.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.is_empty() => (h.to_owned(), p.to_owned()),
        _ if !hostport.is_empty() => (hostport.to_owned(), "6379".to_owned()),
        _ => ("127.0.0.1".to_owned(), "6379".to_owned()),
    }
}

/// `redis-cli` against that Redis.
pub fn redis_cli(args: &[&str]) -> anyhow::Result<String> {
    let (host, port) = redis_host_port();
    run(Command::new("redis-cli")
        .args(["-h", &host, "-p", &port])
        .args(args))
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// An HTTP client that cannot hang the harness: every request has a
/// connect timeout and an overall `timeout`.
pub fn client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(timeout)
        .build()?)
}

/// `perf record -g` of a process while this lives, when `BENCH_PERF_DIR`
/// names a directory (the profile of a slow scenario; see the README).
#[derive(Debug)]
pub struct Perf {
    child: Child,
}

impl Perf {
    pub fn attach(pid: u32, name: &str) -> Option<Self> {
        let dir = std::env::var_os("BENCH_PERF_DIR")?;
        let out = Path::new(&dir).join(format!("{name}.data"));
        let child = Command::new("perf")
            .args(["record", "-g", "-F", "499", "-p", &pid.to_string(), "-o"])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        // perf needs a moment to attach before the load starts.
        std::thread::sleep(Duration::from_millis(300));
        Some(Self { child })
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        // SIGINT: perf writes its data file and exits.
        stop(&mut self.child, "-INT", Duration::from_secs(30));
    }
}

/// A child process, killed on drop.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    pub port: u16,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return; // already gone (a scenario stopped it)
        }
        stop(&mut self.child, "-TERM", Duration::from_secs(10));
    }
}

/// Sends `signal` (`-TERM`, `-INT`) and waits up to `grace` for the exit,
/// then kills.
fn stop(child: &mut Child, signal: &str, grace: Duration) {
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The release `app` binary next to this example.
pub fn app_binary() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("APP_BIN") {
        return Ok(PathBuf::from(p));
    }
    // The harness binaries sit beside `app` in target/<profile>/.
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .map(|d| d.join("app"))
        .context("no parent dir")?;
    anyhow::ensure!(
        bin.exists(),
        "{} not found: build it with `cargo build --release -p app`",
        bin.display()
    );
    Ok(bin)
}

/// Starts `app <role>` with `env` and waits for `/readyz`. Returns it and how
/// long it took to become ready.
pub async fn start_app(role: &str, env: &[(&str, String)]) -> anyhow::Result<(Proc, Duration)> {
    let port = test_support::free_port();
    let started = Instant::now();
    let mut cmd = Command::new(app_binary()?);
    cmd.arg(role)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HTTP_HOST", "127.0.0.1")
        .env("HTTP_PORT", port.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    // `HARNESS_LOG_FILE` is ours, not the app's: the app's log (stderr) goes there.
    match env.iter().find(|(k, _)| *k == "HARNESS_LOG_FILE") {
        Some((_, path)) => cmd.stderr(std::fs::File::create(path)?),
        None => cmd.stderr(Stdio::null()),
    };
    for (k, v) in env.iter().filter(|(k, _)| *k != "HARNESS_LOG_FILE") {
        cmd.env(k, v);
    }
    let child = cmd.spawn()?;
    let proc = Proc { child, port };
    let url = format!("http://127.0.0.1:{port}/readyz");
    let client = client(Duration::from_secs(2))?;
    loop {
        if client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return Ok((proc, started.elapsed()));
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "app {role} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Spawns this benchmark binary itself in a helper mode (the baselines).
pub async fn start_self(mode: &str) -> anyhow::Result<Proc> {
    let port = test_support::free_port();
    let child = Command::new(std::env::current_exe()?)
        .args([mode, &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "{mode} did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(Proc { child, port })
}

/// The sum of `name`'s samples whose line contains `with` (`""`: all of
/// them) on the app's `/metrics` at `port` (0 when it has none yet).
pub async fn metric(
    client: &reqwest::Client,
    port: u16,
    name: &str,
    with: &str,
) -> anyhow::Result<f64> {
    let body = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(body
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
                && l.contains(with)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        // An empty f64 sum is -0.0.
        .fold(0.0, |a, b| a + b))
}

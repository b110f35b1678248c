//! Scenario 3: no-op jobs through the queue at concurrency 64, against
//! BullMQ (the peer) and redis-benchmark LPUSH/RPOP in the same run.
//!
//! Both queues run the same way: a producer process making 64 concurrent
//! one-job enqueues, apart from a worker process at concurrency 64 (as
//! Trellis's `serve` and `worker` are), on the same Redis. The clock runs
//! from the producer's go to the worker having started every job. Then, at
//! 10% of Trellis's peak rate, the enqueue-to-start p99; and, with no worker,
//! Redis memory per pending job for the same payload.

use crate::report::Scenario;
use crate::tools;
use anyhow::Context as _;
use async_trait::async_trait;
use ports::{JobContext, JobFailure, JobHandler, JobQueue as _, NewJob};
use queue_adapter::{JobWorker, QueueSettings, RedisJobQueue, RedisSettings, WorkerSettings};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio_util::sync::CancellationToken;

const CONCURRENCY: usize = 64;
const KIND: &str = "bench:noop";
/// How long a whole run (enqueue and process) may take.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// Which queue a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Trellis,
    BullMq,
}

/// What one producer + worker run measured.
#[derive(Debug, Clone, Copy)]
struct RunResult {
    jobs_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

pub(crate) async fn run(jobs: usize, out: &mut Vec<Scenario>) -> anyhow::Result<()> {
    let n = jobs.to_string();
    let lpush = tools::redis_benchmark(&["-t", "lpush", "-n", &n, "-c", "64", "-P", "1"])?;
    let rpop = tools::redis_benchmark(&["-t", "rpop", "-n", &n, "-c", "64", "-P", "1"])?;
    let mut s = Scenario::new("3. job queue");

    let trellis = run_pair(Peer::Trellis, jobs, None).await?;
    s.ratio(
        &format!("{jobs} no-op jobs, producer and worker processes, concurrency 64, vs redis-benchmark LPUSH -P 1"),
        trellis.jobs_per_s,
        lpush,
        0.40,
        "jobs/s",
    );
    match run_pair(Peer::BullMq, jobs, None).await {
        Ok(bull) => {
            s.ratio(
                &format!(
                    "{jobs} no-op jobs, the same way, vs BullMQ 6 (Node.js) on the same Redis"
                ),
                trellis.jobs_per_s,
                bull.jobs_per_s,
                2.0,
                "jobs/s",
            );
            s.figure("BullMQ enqueue-to-start p99 ms (at peak)", bull.p99_ms);
        }
        Err(e) => s.failed(&format!("the BullMQ peer did not run: {e:#}")),
    }
    s.figure("enqueue-to-start p50 ms (at peak)", trellis.p50_ms);
    s.figure("enqueue-to-start p99 ms (at peak)", trellis.p99_ms);
    s.figure("redis-benchmark RPOP req/s", rpop);

    // A tenth of the peak: what a job waits when the queue is not saturated.
    let rate = (trellis.jobs_per_s / 10.0).max(100.0);
    let paced = (jobs / 10).max(1_000);
    let light = run_pair(Peer::Trellis, paced, Some(rate)).await?;
    s.bound(
        &format!("enqueue-to-start p99 at 10% of peak ({rate:.0} jobs/s, {paced} jobs)"),
        light.p99_ms,
        20.0,
        false,
        "ms",
    );
    s.figure("enqueue-to-start p50 ms (at 10% of peak)", light.p50_ms);

    let pending = jobs;
    let ours = memory_per_pending_job(Peer::Trellis, pending).await?;
    match memory_per_pending_job(Peer::BullMq, pending).await {
        Ok(theirs) => s.bound(
            &format!(
                "Redis memory per pending job ({pending} jobs), at most BullMQ's ({theirs:.0} B)"
            ),
            ours,
            theirs,
            false,
            "bytes",
        ),
        Err(e) => s.failed(&format!("BullMQ's memory could not be measured: {e:#}")),
    }
    out.push(s);
    Ok(())
}

/// The BullMQ peer's folder (`npm ci` there: `just bench` does).
fn bullmq_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/bullmq")
}

/// A helper process of one role, its stdout read line by line.
struct Helper {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Helper {
    fn spawn(
        peer: Peer,
        role: &str,
        prefix: &str,
        jobs: usize,
        rate: Option<f64>,
    ) -> anyhow::Result<Self> {
        let rate = rate.map_or_else(|| "0".to_owned(), |r| format!("{r:.0}"));
        let (host, port) = tools::redis_host_port();
        let redis = format!("redis://{host}:{port}");
        let mut cmd = match peer {
            Peer::Trellis => {
                let mut c = Command::new(std::env::current_exe()?);
                c.arg(format!("--queue-{role}"));
                c
            }
            Peer::BullMq => {
                let mut c = Command::new("node");
                c.current_dir(bullmq_dir()).arg("peer.mjs").arg(role);
                c
            }
        };
        cmd.args([
            "--redis",
            &redis,
            "--prefix",
            prefix,
            "--jobs",
            &jobs.to_string(),
        ])
        .args(["--concurrency", &CONCURRENCY.to_string(), "--rate", &rate])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting the {peer:?} {role}"))?;
        let stdout = child.stdout.take().context("piped stdout")?;
        Ok(Self {
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The next line it prints, within `limit`.
    async fn line(&mut self, limit: Duration) -> anyhow::Result<String> {
        tokio::time::timeout(limit, self.lines.next_line())
            .await
            .context("timed out")??
            .context("it exited early")
    }

    async fn ready(&mut self) -> anyhow::Result<()> {
        let line = self.line(Duration::from_secs(30)).await?;
        anyhow::ensure!(line == "READY", "expected READY, got {line:?}");
        Ok(())
    }

    async fn go(&mut self) -> anyhow::Result<()> {
        let stdin = self.child.stdin.as_mut().context("piped stdin")?;
        stdin.write_all(b"go\n").await?;
        stdin.flush().await?;
        Ok(())
    }

    async fn json(&mut self, limit: Duration) -> anyhow::Result<serde_json::Value> {
        let line = self.line(limit).await?;
        serde_json::from_str(&line).with_context(|| format!("not JSON: {line:?}"))
    }
}

/// One producer and one worker process of `peer` over `jobs` jobs (at
/// `rate` jobs/s, or as fast as they go).
async fn run_pair(peer: Peer, jobs: usize, rate: Option<f64>) -> anyhow::Result<RunResult> {
    let redis = test_support::TestRedis::new().await;
    let mut worker = Helper::spawn(peer, "worker", redis.prefix(), jobs, None)?;
    worker.ready().await.context("the worker")?;
    let mut producer = Helper::spawn(peer, "producer", redis.prefix(), jobs, rate)?;
    producer.ready().await.context("the producer")?;
    let started = Instant::now();
    producer.go().await?;
    let done = worker
        .json(RUN_LIMIT)
        .await
        .context("the worker's result")?;
    let elapsed = started.elapsed();
    producer
        .json(Duration::from_secs(10))
        .await
        .context("the producer's result")?;
    let _ = worker.child.wait().await;
    let _ = producer.child.wait().await;
    let started_jobs = done["started"].as_u64().unwrap_or(0);
    anyhow::ensure!(
        started_jobs >= jobs as u64,
        "{peer:?}: only {started_jobs} of {jobs} jobs started"
    );
    Ok(RunResult {
        jobs_per_s: jobs as f64 / elapsed.as_secs_f64(),
        p50_ms: done["p50_ms"].as_f64().unwrap_or(f64::NAN),
        p99_ms: done["p99_ms"].as_f64().unwrap_or(f64::NAN),
    })
}

/// Redis memory per job (`MEMORY USAGE` of every key the queue wrote,
/// summed) after enqueueing `jobs` jobs that no worker takes. Counting the
/// keys themselves leaves out what `used_memory` also moves with: client
/// buffers, the script cache, allocator slack.
async fn memory_per_pending_job(peer: Peer, jobs: usize) -> anyhow::Result<f64> {
    let redis = test_support::TestRedis::new().await;
    let mut producer = Helper::spawn(peer, "producer", redis.prefix(), jobs, None)?;
    producer.ready().await?;
    producer.go().await?;
    producer.json(RUN_LIMIT).await?;
    let _ = producer.child.wait().await;
    let mut c = redis.connection().await;
    let keys: Vec<String> = {
        let mut iter: redis::AsyncIter<String> =
            redis::AsyncCommands::scan_match(&mut c, format!("{}*", redis.prefix())).await?;
        let mut keys = Vec::new();
        while let Some(k) = futures_util::StreamExt::next(&mut iter).await {
            keys.push(k?);
        }
        keys
    };
    let mut total = 0_u64;
    for chunk in keys.chunks(1_000) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("MEMORY").arg("USAGE").arg(k).arg("SAMPLES").arg(0);
        }
        let sizes: Vec<Option<u64>> = pipe.query_async(&mut c).await?;
        total += sizes.into_iter().flatten().sum::<u64>();
    }
    Ok(total as f64 / jobs as f64)
}

/// `bench --queue-worker|--queue-producer --redis URL --prefix P --jobs N
/// --concurrency C --rate R`: the Trellis side of a run, one role per
/// process, speaking as `peers/bullmq/peer.mjs` does.
pub(crate) fn helper(role: &str, args: &[String]) -> anyhow::Result<()> {
    let arg = |name: &str| -> anyhow::Result<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .with_context(|| format!("{name} is required"))
    };
    let (url, prefix) = (arg("--redis")?, arg("--prefix")?);
    let jobs: usize = arg("--jobs")?.parse()?;
    let concurrency: usize = arg("--concurrency")?.parse()?;
    let rate: f64 = arg("--rate")?.parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let pool = queue_adapter::build_pool(&RedisSettings {
            max_connections: concurrency,
            ..RedisSettings::new(url)
        })?;
        let queue = RedisJobQueue::new(pool, QueueSettings::new(&prefix));
        match role {
            "worker" => worker(queue, jobs, concurrency).await,
            "producer" => producer(queue, jobs, concurrency, rate).await,
            other => anyhow::bail!("unknown role {other}"),
        }
    })
}

/// Records, per job, the time from enqueue to start.
struct NoOp {
    waits_us: Mutex<Vec<f64>>,
    all_started: tokio::sync::Notify,
    jobs: usize,
}

#[async_trait]
impl JobHandler for NoOp {
    async fn handle(&self, job: &JobContext) -> Result<(), JobFailure> {
        let enqueued = job.payload["t"].as_i64().unwrap_or(0);
        let now = chrono::Utc::now().timestamp_micros();
        if let Ok(mut w) = self.waits_us.lock() {
            w.push((now - enqueued) as f64);
            if w.len() == self.jobs {
                self.all_started.notify_one();
            }
        }
        Ok(())
    }
}

async fn worker(queue: RedisJobQueue, jobs: usize, concurrency: usize) -> anyhow::Result<()> {
    let handler = Arc::new(NoOp {
        waits_us: Mutex::new(Vec::with_capacity(jobs)),
        all_started: tokio::sync::Notify::new(),
        jobs,
    });
    let mut worker = JobWorker::new(
        queue,
        WorkerSettings {
            concurrency,
            ..WorkerSettings::new("bench", vec![("default".into(), 1)])
        },
    );
    worker.handle(KIND, handler.clone());
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    // A profile, if asked for, is of this process: the worker side.
    let perf = tools::Perf::attach(std::process::id(), "queue-worker");
    println!("READY");
    tokio::time::timeout(RUN_LIMIT, handler.all_started.notified())
        .await
        .context("not every job started in time")?;
    drop(perf);
    let mut waits = handler
        .waits_us
        .lock()
        .map(|w| w.clone())
        .unwrap_or_default();
    waits.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "started": waits.len(),
            "p50_ms": tools::percentile(&waits, 0.5) / 1000.0,
            "p99_ms": tools::percentile(&waits, 0.99) / 1000.0,
        })
    );
    stop.cancel();
    running.await?;
    Ok(())
}

async fn producer(
    queue: RedisJobQueue,
    jobs: usize,
    concurrency: usize,
    rate: f64,
) -> anyhow::Result<()> {
    println!("READY");
    tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await??;
    let started = Instant::now();
    // Paced: task p sends its i-th job at (i + p / concurrency) * interval.
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(concurrency as f64 / rate));
    let tasks: Vec<_> = (0..concurrency)
        .map(|p| {
            let q = queue.clone();
            tokio::spawn(async move {
                for (i, _) in (p..jobs).step_by(concurrency).enumerate() {
                    if let Some(every) = interval {
                        let due = every.mul_f64(i as f64 + p as f64 / concurrency as f64);
                        tokio::time::sleep_until((started + due).into()).await;
                    }
                    let t = chrono::Utc::now().timestamp_micros();
                    let job = NewJob::new(KIND, 1, &serde_json::json!({"t": t}))?.max_retries(0);
                    q.enqueue(job).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    println!(
        "{}",
        serde_json::json!({"enqueued": jobs, "seconds": started.elapsed().as_secs_f64()})
    );
    Ok(())
}

//! A private `redis-server` for fault 2, persistent as a production queue
//! Redis is: append-only file, fsync on every write. It is restarted the way
//! an operator restarts one (SIGTERM, wait for the exit, start again on the
//! same port and directory), never the shared Redis others use.

use anyhow::Context as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long Redis may take to exit after SIGTERM or to answer after a start.
const PATIENCE: Duration = Duration::from_secs(10);

pub(crate) struct PersistentRedis {
    port: u16,
    /// Its `--dir`: the AOF lives here, across restarts; removed on drop.
    dir: PathBuf,
    child: Option<Child>,
}

impl PersistentRedis {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "trellis-chaos-redis-{}",
            test_support::unique_suffix()
        ));
        std::fs::create_dir_all(&dir).context("creating the Redis data directory")?;
        let mut r = Self {
            port: test_support::free_port(),
            dir,
            child: None,
        };
        r.start_again().await?;
        Ok(r)
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops it as `redis-cli shutdown` or systemd would: SIGTERM, then the
    /// wait for it to flush the AOF and exit. Returns how long that took.
    pub(crate) async fn stop(&mut self) -> anyhow::Result<Duration> {
        let mut child = self.child.take().context("Redis is not running")?;
        let t = Instant::now();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .context("sending SIGTERM to redis-server")?;
        loop {
            if let Some(status) = child.try_wait()? {
                anyhow::ensure!(
                    status.success(),
                    "redis-server exited with {status} after SIGTERM (see {}/redis.log)",
                    self.dir.display()
                );
                return Ok(t.elapsed());
            }
            if t.elapsed() > PATIENCE {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("redis-server ignored SIGTERM for {PATIENCE:?}; killed");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts it on the same port and directory (it reloads the AOF) and
    /// waits until it answers PING (not while it is still loading).
    pub(crate) async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "Redis is already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--logfile", "redis.log"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (is it installed?)")?;
        self.child = Some(child);
        let t = Instant::now();
        loop {
            if self.ping().await {
                return Ok(());
            }
            anyhow::ensure!(
                t.elapsed() < PATIENCE,
                "redis-server did not answer on port {} (see {}/redis.log)",
                self.port,
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ping(&self) -> bool {
        let Ok(mut c) = self.connection().await else {
            return false;
        };
        matches!(
            redis::cmd("PING").query_async::<String>(&mut c).await,
            Ok(p) if p == "PONG"
        )
    }

    pub(crate) async fn connection(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url())?;
        let c = tokio::time::timeout(
            Duration::from_secs(2),
            client.get_multiplexed_async_connection(),
        )
        .await
        .context("connecting to the private Redis timed out")??;
        Ok(c)
    }

    /// `CONFIG GET name` on the running server.
    pub(crate) async fn config(&self, name: &str) -> anyhow::Result<String> {
        let mut c = self.connection().await?;
        let v: Vec<String> = tokio::time::timeout(
            Duration::from_secs(2),
            redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async(&mut c),
        )
        .await
        .context("CONFIG GET timed out")??;
        v.get(1).cloned().context("no such setting")
    }

    /// Runs one command with a time limit.
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> anyhow::Result<T> {
        let mut c = self.connection().await?;
        Ok(
            tokio::time::timeout(Duration::from_secs(2), cmd.query_async(&mut c))
                .await
                .context("the Redis command timed out")??,
        )
    }
}

impl Drop for PersistentRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

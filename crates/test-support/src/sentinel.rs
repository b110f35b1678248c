//! A Redis primary, its replica and a Sentinel watching them, each a
//! `redis-server` child on its own loopback port: Redis high availability
//! as a managed offering runs it, with a failover a test can order.

use crate::processes::{kill, wait_until};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The name the Sentinel knows the primary by.
pub const SENTINEL_SERVICE: &str = "trellis";

#[derive(Debug)]
pub struct TestSentinel {
    sentinel_port: u16,
    /// The two servers' ports (the first starts as the primary).
    ports: [u16; 2],
    children: Vec<Option<Child>>,
    dir: std::path::PathBuf,
}

fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn spawn(args: &[String]) -> Child {
    Command::new("redis-server")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start redis-server (is it installed?): {e}"))
}

impl TestSentinel {
    /// Starts the three and waits until the Sentinel sees the replica in
    /// sync (a failover needs one).
    pub fn start() -> Self {
        let ports = [crate::free_port(), crate::free_port()];
        let sentinel_port = crate::free_port();
        let dir = std::env::temp_dir().join(format!("trellis-sentinel-{}", crate::unique_suffix()));
        std::fs::create_dir_all(&dir).expect("creating the Sentinel's directory");
        let server = |port: u16, replica_of: Option<u16>| {
            let mut args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                // DEBUG SLEEP, to make a replica lag (`stall_replica`).
                "--enable-debug-command",
                "local",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            if let Some(primary) = replica_of {
                args.extend([
                    "--replicaof".into(),
                    "127.0.0.1".into(),
                    primary.to_string(),
                ]);
            }
            spawn(&args)
        };
        let mut children = vec![Some(server(ports[0], None))];
        wait_until("the primary to answer PING", || {
            cli(ports[0], &["PING"]).contains("PONG")
        });
        children.push(Some(server(ports[1], Some(ports[0]))));
        wait_until("the replica to sync", || {
            cli(ports[1], &["INFO", "replication"]).contains("master_link_status:up")
        });
        // Sentinel rewrites its configuration file: one of its own.
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n\
                 sentinel failover-timeout {SENTINEL_SERVICE} 5000\n",
                dir.display(),
                ports[0]
            ),
        )
        .expect("writing sentinel.conf");
        children.push(Some(spawn(&[
            conf.display().to_string(),
            "--sentinel".to_owned(),
        ])));
        let this = Self {
            sentinel_port,
            ports,
            children,
            dir,
        };
        wait_until("the Sentinel to see the replica", || {
            cli(sentinel_port, &["SENTINEL", "replicas", SENTINEL_SERVICE])
                .contains(&ports[1].to_string())
        });
        this
    }

    /// `redis-sentinel://127.0.0.1:<sentinel>?sentinelServiceName=...`, in
    /// fred's convention.
    pub fn url(&self) -> String {
        format!(
            "redis-sentinel://127.0.0.1:{}?sentinelServiceName={SENTINEL_SERVICE}",
            self.sentinel_port
        )
    }

    /// The port of the server the Sentinel names as primary now.
    pub fn primary_port(&self) -> u16 {
        cli(
            self.sentinel_port,
            &["SENTINEL", "get-master-addr-by-name", SENTINEL_SERVICE],
        )
        .lines()
        .nth(1)
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0)
    }

    /// Makes the server that is not the primary now stop for `seconds`
    /// (`DEBUG SLEEP`): it neither applies nor acknowledges what the
    /// primary sends meanwhile, as a replica that lags. Returns at once;
    /// the sleep is over when the returned child exits.
    pub fn stall_replica(&self, seconds: u32) -> Child {
        let primary = self.primary_port();
        let replica = if self.ports[0] == primary {
            self.ports[1]
        } else {
            self.ports[0]
        };
        let child = Command::new("redis-cli")
            .args([
                "-p",
                &replica.to_string(),
                "DEBUG",
                "SLEEP",
                &seconds.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli");
        // The sleep starts once the replica has read the command.
        std::thread::sleep(Duration::from_millis(100));
        child
    }

    /// Kills the primary (SIGKILL: whatever it had not replicated is gone)
    /// and waits until the Sentinel has promoted the replica and it takes
    /// writes. Returns how long after the kill that was.
    pub fn kill_primary(&mut self) -> Duration {
        let before = self.primary_port();
        let index = self
            .ports
            .iter()
            .position(|p| *p == before)
            .expect("the primary is one of the two servers");
        let started = Instant::now();
        kill(&mut self.children[index]);
        wait_until("the Sentinel to promote the replica", || {
            let now = self.primary_port();
            now != 0 && now != before && cli(now, &["ROLE"]).starts_with("master")
        });
        started.elapsed()
    }

    /// How many times the primary now has run `WAIT` (its commandstats).
    pub fn primary_waits(&self) -> u64 {
        cli(self.primary_port(), &["INFO", "commandstats"])
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_wait:calls="))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// A plain `redis://` URL of the primary now.
    pub fn primary_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.primary_port())
    }

    /// Orders a failover and waits until the replica is the primary and
    /// takes writes. Returns how long that took.
    pub fn failover(&self) -> Duration {
        let before = self.primary_port();
        let started = Instant::now();
        // Until the Sentinel has heard from the replica itself (its INFO,
        // every few seconds at first) it has no replica it may promote.
        wait_until("the Sentinel to accept the failover", || {
            cli(
                self.sentinel_port,
                &["SENTINEL", "FAILOVER", SENTINEL_SERVICE],
            )
            .contains("OK")
        });
        wait_until("the failover", || {
            let now = self.primary_port();
            now != 0 && now != before && cli(now, &["ROLE"]).starts_with("master")
        });
        started.elapsed()
    }
}

impl Drop for TestSentinel {
    fn drop(&mut self) {
        for child in &mut self.children {
            kill(child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

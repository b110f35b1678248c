//! Real service processes a test owns: a private `redis-server` it can stop
//! and start again (to test outages without touching the shared one).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A `redis-server` child on its own port: without persistence by default,
/// or with AOF (`start_persistent`) like a production queue Redis.
#[derive(Debug)]
pub struct RedisProcess {
    port: u16,
    child: Option<Child>,
    /// The AOF directory when persistent.
    dir: Option<std::path::PathBuf>,
}

impl RedisProcess {
    pub fn start() -> Self {
        let mut p = Self {
            port: free_port(),
            child: None,
            dir: None,
        };
        p.resume();
        p
    }

    /// With `appendonly yes` and `appendfsync always`: a restart keeps
    /// everything acknowledged.
    pub fn start_persistent() -> Self {
        let dir = std::env::temp_dir().join(format!("trellis-redis-{}", crate::unique_suffix()));
        std::fs::create_dir_all(&dir).expect("creating the Redis data directory");
        let mut p = Self {
            port: free_port(),
            child: None,
            dir: Some(dir),
        };
        p.resume();
        p
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (connections drop at once).
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    /// Stops the server as an operator would (`redis-cli shutdown`,
    /// systemd): SIGTERM, then waits for it to flush its AOF and exit.
    /// Returns how long that took; kills it after 10 s.
    pub fn stop_gracefully(&mut self) -> Duration {
        let Some(mut child) = self.child.take() else {
            return Duration::ZERO;
        };
        let t = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = child.try_wait() {
                return t.elapsed();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        kill(&mut Some(child));
        t.elapsed()
    }

    /// Starts the server again on the same port (and, when persistent, the
    /// same directory: it reloads its AOF) and waits until it answers PING,
    /// not merely accepts connections while it is still loading.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ]);
        match &self.dir {
            Some(dir) => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                    .arg(dir)
                    .args(["--logfile", "redis.log"]);
            }
            None => {
                cmd.args(["--appendonly", "no"]);
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server (is it installed?): {e}"));
        self.child = Some(child);
        let port = self.port;
        wait_until("redis-server to answer PING", || pong(port));
    }
}

/// Kills the process, if there is one, and reaps it.
pub(crate) fn kill(child: &mut Option<std::process::Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Blocks until `ready` holds; panics after 10 s (a local server process
/// that does not listen by then is not going to).
pub(crate) fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the Redis on `port` answers PING (a loading one answers an error).
fn pong(port: u16) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0_u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

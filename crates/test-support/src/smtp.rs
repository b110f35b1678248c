//! A real SMTP server process (Python's aiosmtpd, `smtp_sink.py`) that tests
//! send mail to and read back.

use crate::{free_port, unique_suffix};
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCRIPT: &str = include_str!("../smtp_sink.py");

/// How the server answers.
#[derive(Debug, Clone, Default)]
pub struct SmtpBehaviour {
    /// Answer the first N messages with `fail_reply` (a 4xx by default).
    pub fail_first: u32,
    pub fail_reply: Option<String>,
    /// Answer every message with this (e.g. `550 5.1.1 No such user`).
    pub always_reply: Option<String>,
}

/// One message the server accepted, decoded by Python's `email` package.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ReceivedMail {
    /// When the server accepted it (ns since the Unix epoch).
    #[serde(default)]
    pub received_ns: u64,
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub from: String,
    pub to: String,
    /// The display name of the (first) `To` mailbox, decoded.
    pub to_name: Option<String>,
    pub to_addr: Option<String>,
    pub subject: String,
    pub message_id: String,
    pub text: Option<String>,
    pub html: Option<String>,
}

#[derive(Debug)]
pub struct SmtpSink {
    port: u16,
    dir: PathBuf,
    script: PathBuf,
    behaviour: SmtpBehaviour,
    child: Option<Child>,
}

impl SmtpSink {
    pub fn start() -> Self {
        Self::start_with(SmtpBehaviour::default())
    }

    pub fn start_with(behaviour: SmtpBehaviour) -> Self {
        let dir = std::env::temp_dir().join(format!("trellis-smtp-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).expect("creating the SMTP sink's directory");
        let script = dir.join("smtp_sink.py");
        std::fs::write(&script, SCRIPT).expect("writing smtp_sink.py");
        let mut sink = Self {
            port: free_port(),
            dir: dir.join("mail"),
            script,
            behaviour,
            child: None,
        };
        sink.resume();
        sink
    }

    /// `smtp://127.0.0.1:<port>` (plain SMTP, no auth).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (mail sent now fails to connect).
    pub fn stop(&mut self) {
        crate::processes::kill(&mut self.child);
    }

    /// Starts it (again) on the same port with the same behaviour.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        // `scripts/dev test` points TRELLIS_PYTHON at a venv when the system
        // Python cannot take packages (PEP 668).
        let python = std::env::var("TRELLIS_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut cmd = Command::new(python);
        cmd.arg(&self.script)
            .args(["--port", &self.port.to_string(), "--dir"])
            .arg(&self.dir)
            .args(["--fail-first", &self.behaviour.fail_first.to_string()]);
        if let Some(r) = &self.behaviour.fail_reply {
            cmd.args(["--fail-reply", r]);
        }
        if let Some(r) = &self.behaviour.always_reply {
            cmd.args(["--always-reply", r]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 for the SMTP sink: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        // Its first line, read on a thread so that a sink that neither
        // starts nor exits cannot hang the caller.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(read.map(|_| line));
        });
        let first = rx.recv_timeout(Duration::from_secs(30));
        if !matches!(&first, Ok(Ok(line)) if line.contains("READY")) {
            let _ = child.kill();
            panic!(
                "\n\nthe SMTP sink did not start. It needs Python's aiosmtpd:\n  python3 -m pip install aiosmtpd\n(`scripts/dev test` installs it)\n"
            );
        }
        self.child = Some(child);
        let port = self.port;
        crate::processes::wait_until("the SMTP sink to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Every message accepted so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .filter_map(|s| serde_json::from_str(&s).ok())
            .collect()
    }

    /// Waits until at least `n` messages arrived; returns them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} mails (have {})",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}

//! The Firebase Auth emulator (from the `firebase-tools` npm package), a
//! real process speaking the Identity Toolkit API, on free ports.

use crate::{free_port, unique_suffix};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The project the emulator runs (a `demo-` project needs no credentials).
pub const EMULATOR_PROJECT: &str = "demo-trellis";

#[derive(Debug)]
pub struct AuthEmulator {
    port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

/// `TRELLIS_FIREBASE`, or where `scripts/dev test` installs firebase-tools.
fn firebase() -> PathBuf {
    std::env::var_os("TRELLIS_FIREBASE").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_default();
            PathBuf::from(home).join(".cache/trellis/firebase-tools/node_modules/.bin/firebase")
        },
        PathBuf::from,
    )
}

impl AuthEmulator {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("trellis-auth-emulator-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).expect("creating the emulator's directory");
        let port = free_port();
        let config = serde_json::json!({
            "emulators": {
                "auth": {"host": "127.0.0.1", "port": port},
                "hub": {"host": "127.0.0.1", "port": free_port()},
                "logging": {"host": "127.0.0.1", "port": free_port()},
                "ui": {"enabled": false},
                "singleProjectMode": true
            }
        });
        std::fs::write(dir.join("firebase.json"), config.to_string())
            .expect("writing firebase.json");
        let bin = firebase();
        let child = Command::new(&bin)
            .args(["emulators:start", "--only", "auth", "--project", EMULATOR_PROJECT])
            .current_dir(&dir)
            .env("FIREBASE_CLI_DISABLE_UPDATE_CHECK", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "\n\ncannot run {} ({e}): the Auth emulator tests need firebase-tools:\n  npm install --prefix ~/.cache/trellis/firebase-tools firebase-tools\n(`scripts/dev test` installs it)\n",
                    bin.display()
                )
            });
        let emulator = Self {
            port,
            child: Some(child),
            dir,
        };
        // Node starts slowly on a busy machine; the emulator listens once
        // it is ready.
        let deadline = Instant::now() + Duration::from_secs(90);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the Auth emulator did not listen within 90 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        emulator
    }

    /// `127.0.0.1:<port>`, as `FIREBASE_AUTH_EMULATOR_HOST` takes it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The Identity Toolkit base URL the emulator serves.
    pub fn identity_toolkit(&self) -> String {
        format!(
            "http://{}/identitytoolkit.googleapis.com/v1/projects/{EMULATOR_PROJECT}",
            self.host()
        )
    }
}

#[cfg(feature = "auth-emulator")]
impl AuthEmulator {
    /// Creates account `uid` (with `email`), as the Admin SDK would.
    pub async fn create_user(&self, uid: &str, email: Option<&str>) {
        let status = reqwest::Client::new()
            .post(format!("{}/accounts", self.identity_toolkit()))
            .bearer_auth("owner")
            .json(&match email {
                Some(email) => serde_json::json!({ "localId": uid, "email": email }),
                None => serde_json::json!({ "localId": uid }),
            })
            .send()
            .await
            .expect("the Auth emulator answers")
            .status();
        assert!(status.is_success(), "creating {uid}: {status}");
    }

    /// Whether account `uid` exists.
    pub async fn has_user(&self, uid: &str) -> bool {
        let body: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/accounts:lookup", self.identity_toolkit()))
            .bearer_auth("owner")
            .json(&serde_json::json!({ "localId": [uid] }))
            .send()
            .await
            .expect("the Auth emulator answers")
            .json()
            .await
            .expect("a JSON answer");
        body["users"].as_array().is_some_and(|u| !u.is_empty())
    }
}

impl Drop for AuthEmulator {
    fn drop(&mut self) {
        crate::processes::kill(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

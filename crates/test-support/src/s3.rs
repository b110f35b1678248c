//! A real S3-compatible server process (MiniStack, from PyPI) that checks
//! SigV4 signatures and enforces POST policies, one per test, plus an
//! HTTP client for what an object store presigns.

use crate::{free_port, unique_suffix};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const SETUP: &str = include_str!("../s3_setup.py");

/// MiniStack on a free port, with a fresh bucket and an access key whose
/// signatures it checks.
#[derive(Debug)]
pub struct S3Server {
    port: u16,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    child: Option<Child>,
    _dir: PathBuf,
}

/// `TRELLIS_MINISTACK`, or the venv `scripts/dev test` installs it in.
fn ministack() -> PathBuf {
    std::env::var_os("TRELLIS_MINISTACK").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_default();
            PathBuf::from(home).join(".cache/trellis/s3-venv/bin/ministack")
        },
        PathBuf::from,
    )
}

impl S3Server {
    pub fn start() -> Self {
        let bin = ministack();
        let dir = std::env::temp_dir().join(format!("trellis-s3-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).expect("creating the S3 server's directory");
        let port = free_port();
        let child = Command::new(&bin)
            .env("GATEWAY_PORT", port.to_string())
            .env("BIND_HOST", "127.0.0.1")
            .env("AUTH", "true")
            .env("SERVICES", "s3,iam")
            .env("AWS_ACCESS_KEY_ID", "root")
            .env("AWS_SECRET_ACCESS_KEY", "rootsecret")
            .env("MINISTACK_REGION", "us-east-1")
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "\n\ncannot run {} ({e}): the S3 tests need MiniStack:\n  python3 -m venv ~/.cache/trellis/s3-venv && ~/.cache/trellis/s3-venv/bin/pip install ministack boto3\n(`scripts/dev test` installs it)\n",
                    bin.display()
                )
            });
        let mut server = Self {
            port,
            bucket: format!("trellis-{}", unique_suffix()),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            child: Some(child),
            _dir: dir.clone(),
        };
        crate::processes::wait_until("MiniStack to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let script = dir.join("s3_setup.py");
        std::fs::write(&script, SETUP).expect("writing s3_setup.py");
        let python = bin.with_file_name("python3");
        let out = Command::new(&python)
            .arg(&script)
            .arg(port.to_string())
            .arg(&server.bucket)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
        assert!(
            out.status.success(),
            "setting up MiniStack failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let keys: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("s3_setup.py prints the key as JSON");
        server.access_key_id = keys["access_key_id"].as_str().unwrap_or_default().into();
        server.secret_access_key = keys["secret_access_key"]
            .as_str()
            .unwrap_or_default()
            .into();
        server
    }

    /// `http://127.0.0.1:<port>` (path-style addressing).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        crate::processes::kill(&mut self.child);
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

/// Posts presigned forms and follows read links over real HTTP.
#[derive(Debug, Clone, Default)]
pub struct HttpObjectClient {
    http: reqwest::Client,
}

impl HttpObjectClient {
    pub fn new() -> Self {
        Self::default()
    }

    /// The presigned form of a `POST /api/v1/uploads` answer.
    pub fn form_of(created: &serde_json::Value) -> anyhow::Result<ports::PresignedPost> {
        Ok(ports::PresignedPost {
            url: created["url"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("no url in {created}"))?
                .to_owned(),
            fields: serde_json::from_value(created["fields"].clone())?,
            expires_at: serde_json::from_value(created["expires_at"].clone())?,
        })
    }

    /// Posts `form`'s fields then `file` (as `file`), answering the status
    /// and body.
    pub async fn post(&self, form: &ports::PresignedPost, file: Vec<u8>) -> (u16, String) {
        let mut multipart = reqwest::multipart::Form::new();
        for (k, v) in &form.fields {
            multipart = multipart.text(k.clone(), v.clone());
        }
        let content_type = form
            .fields
            .get("Content-Type")
            .cloned()
            .unwrap_or_else(|| "application/octet-stream".into());
        let part = reqwest::multipart::Part::bytes(file)
            .file_name("upload")
            .mime_str(&content_type)
            .unwrap_or_else(|_| reqwest::multipart::Part::bytes(Vec::new()));
        multipart = multipart.part("file", part);
        let response = self
            .http
            .post(&form.url)
            .multipart(multipart)
            .send()
            .await
            .expect("posting the form");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }
}

#[async_trait::async_trait]
impl ports_testing::ObjectClient for HttpObjectClient {
    async fn post_form(&self, form: &ports::PresignedPost, file: Vec<u8>) -> u16 {
        self.post(form, file).await.0
    }

    async fn get(&self, url: &str) -> Option<Vec<u8>> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .expect("fetching a read link");
        if response.status() != reqwest::StatusCode::OK {
            return None;
        }
        Some(response.bytes().await.expect("reading the object").to_vec())
    }
}

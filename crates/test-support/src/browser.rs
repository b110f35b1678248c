//! A real headless browser for page tests: Debian's Chromium driven by its
//! chromedriver over the W3C WebDriver protocol (a few JSON calls; no
//! client crate needed). On a failing test it saves a screenshot under
//! `target/browser-screenshots/`.

use crate::processes::{kill, wait_until};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The W3C name of an element reference in WebDriver replies.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One Chromium window, headless, under a chromedriver of its own.
#[derive(Debug)]
pub struct Browser {
    driver: Option<Child>,
    base: String,
    session: String,
    http: reqwest::Client,
    name: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium. `name` names the
    /// screenshot a failing test leaves.
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, &[]).await
    }

    /// Like [`start`](Self::start), with the network unplugged: every
    /// request that is not to loopback goes to a proxy that is not there
    /// (so a page that needs a CDN fails to load it).
    pub async fn start_offline(name: &str) -> Self {
        let dead = format!("--proxy-server=http://127.0.0.1:{}", crate::free_port());
        Self::start_with(name, &[dead.as_str()]).await
    }

    async fn start_with(name: &str, extra_args: &[&str]) -> Self {
        let port = crate::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start chromedriver ({e}): apt-get install chromium chromium-driver (scripts/dev test does)")
            });
        let base = format!("http://127.0.0.1:{port}");
        wait_until("chromedriver to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let http = reqwest::Client::new();
        let args: Vec<&str> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
        ]
        .into_iter()
        .chain(extra_args.iter().copied())
        .collect();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium_binary(),
                "args": args,
            },
        }}});
        let reply: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("a WebDriver reply");
        let session = reply["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {reply}"))
            .to_owned();
        Self {
            driver: Some(driver),
            base,
            session,
            http,
            name: name.to_owned(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let reply: Value = req
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("a WebDriver reply");
        reply["value"].clone()
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        let v = self
            .call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
        assert!(v.is_null(), "navigating to {url}: {v}");
    }

    /// The page's DOM as HTML now (after its scripts ran).
    pub async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The URL the browser is at.
    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn find(&self, css: &str) -> Option<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().map(str::to_owned)
    }

    /// Clicks the first element matching `css` (it must exist).
    pub async fn click(&self, css: &str) {
        self.on_element(css, "click", json!({})).await;
    }

    /// Types `text` into the first element matching `css` (it must exist).
    pub async fn type_into(&self, css: &str, text: &str) {
        self.on_element(css, "value", json!({ "text": text })).await;
    }

    /// `POST /element/<id>/<action>` on the first element matching `css`.
    async fn on_element(&self, css: &str, action: &str, body: Value) {
        let id = self
            .find(css)
            .await
            .unwrap_or_else(|| panic!("no element matches {css:?}"));
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/element/{id}/{action}"),
                Some(body),
            )
            .await;
        assert!(v.is_null(), "{action} on {css:?}: {v}");
    }

    /// Waits up to `within` until the page's DOM contains `text`, reloading
    /// nothing (the page's own scripts may change it); returns the DOM.
    pub async fn wait_for_text(&self, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let dom = self.source().await;
            if dom.contains(text) {
                return dom;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {text:?} within {within:?}; it shows:\n{dom}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Saves a screenshot as `<dir>/<name>.png`.
    pub async fn save_screenshot(&self, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
        let _ = std::fs::create_dir_all(dir);
        let path = dir.join(format!("{name}.png"));
        let _ = std::fs::write(&path, self.screenshot().await);
        path
    }
}

/// Where failing tests leave their screenshots.
fn screenshot_dir() -> std::path::PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    std::path::PathBuf::from(target).join("browser-screenshots")
}

fn chromium_binary() -> &'static str {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .unwrap_or("/usr/bin/chromium")
}

impl Drop for Browser {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        let (base, session, name) = (self.base.clone(), self.session.clone(), self.name.clone());
        crate::block_on_fresh_runtime(async move {
            let http = reqwest::Client::new();
            if failing {
                let shot: Option<Value> = match http
                    .get(format!("{base}/session/{session}/screenshot"))
                    .send()
                    .await
                {
                    Ok(r) => r.json().await.ok(),
                    Err(_) => None,
                };
                if let Some(png) = shot.as_ref().and_then(|v| v["value"].as_str()) {
                    use base64::Engine as _;
                    let dir = screenshot_dir();
                    let _ = std::fs::create_dir_all(&dir);
                    let path = dir.join(format!("{name}.png"));
                    if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(png) {
                        let _ = std::fs::write(&path, bytes);
                        eprintln!("browser screenshot of the failure: {}", path.display());
                    }
                }
            }
            let _ = http
                .delete(format!("{base}/session/{session}"))
                .send()
                .await;
        });
        kill(&mut self.driver);
    }
}

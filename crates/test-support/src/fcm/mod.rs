//! A local stand-in for Google's OAuth2 token endpoint and the FCM HTTP v1
//! API: a real HTTP/1.1 server (hyper) on loopback that checks the service-account
//! assertion's signature with the key it handed out, issues access tokens,
//! answers sends as scripted, and records every request.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

mod server;
use server::Server;

/// The Firebase project the fake serves.
pub const FAKE_FCM_PROJECT: &str = "trellis-push-test";
/// The `private_key_id` of the service-account key it hands out.
pub const FAKE_FCM_KEY_ID: &str = "fake-key-1";
/// The `client_email` of that key.
pub const FAKE_FCM_CLIENT_EMAIL: &str = "trellis-push@trellis-push-test.iam.gserviceaccount.com";

/// One scripted answer of the FCM endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct FcmReply {
    pub status: u16,
    /// `None`: a success body naming the message.
    pub body: Option<serde_json::Value>,
    pub retry_after: Option<String>,
}

impl FcmReply {
    pub fn ok() -> Self {
        Self {
            status: 200,
            body: None,
            retry_after: None,
        }
    }

    /// An error in the shape FCM uses: a Google API error whose details carry
    /// the FCM error code.
    pub fn error(status: u16, api_status: &str, fcm_code: Option<&str>, message: &str) -> Self {
        let mut details = Vec::new();
        if let Some(code) = fcm_code {
            details.push(serde_json::json!({
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": code,
            }));
        }
        Self {
            status,
            body: Some(serde_json::json!({
                "error": {"code": status, "message": message, "status": api_status, "details": details}
            })),
            retry_after: None,
        }
    }

    pub fn unregistered() -> Self {
        Self::error(
            404,
            "NOT_FOUND",
            Some("UNREGISTERED"),
            "Requested entity was not found.",
        )
    }

    /// What FCM answers for a malformed registration token.
    pub fn invalid_token() -> Self {
        let mut r = Self::error(
            400,
            "INVALID_ARGUMENT",
            Some("INVALID_ARGUMENT"),
            "The registration token is not a valid FCM registration token",
        );
        if let Some(details) = r
            .body
            .as_mut()
            .and_then(|b| b["error"]["details"].as_array_mut())
        {
            details.push(serde_json::json!({
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}],
            }));
        }
        r
    }

    pub fn unavailable() -> Self {
        Self::error(
            503,
            "UNAVAILABLE",
            Some("UNAVAILABLE"),
            "The service is currently unavailable.",
        )
    }

    pub fn internal() -> Self {
        Self::error(
            500,
            "INTERNAL",
            Some("INTERNAL"),
            "Internal error encountered.",
        )
    }

    pub fn quota_exceeded() -> Self {
        Self::error(
            429,
            "RESOURCE_EXHAUSTED",
            Some("QUOTA_EXCEEDED"),
            "Quota exceeded for the device.",
        )
    }

    pub fn sender_id_mismatch() -> Self {
        Self::error(
            403,
            "PERMISSION_DENIED",
            Some("SENDER_ID_MISMATCH"),
            "SenderId mismatch",
        )
    }

    pub fn third_party_auth_error() -> Self {
        Self::error(
            401,
            "UNAUTHENTICATED",
            Some("THIRD_PARTY_AUTH_ERROR"),
            "Auth error from APNS or Web Push Service",
        )
    }

    pub fn with_retry_after(mut self, value: &str) -> Self {
        self.retry_after = Some(value.to_owned());
        self
    }
}

/// A request to the token endpoint, decoded.
#[derive(Debug, Clone)]
pub struct OAuthRequest {
    pub grant_type: String,
    /// The assertion's JOSE header.
    pub header: serde_json::Value,
    pub claims: serde_json::Value,
    /// Whether the assertion verified with the handed-out key (RS256, the
    /// token endpoint as audience, not expired).
    pub signature_valid: bool,
    /// The access token issued for it, if any.
    pub issued: Option<String>,
    pub at: Instant,
}

/// A request to the FCM send endpoint.
#[derive(Debug, Clone)]
pub struct FcmRequest {
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: serde_json::Value,
    /// `message.token` of the body.
    pub token: Option<String>,
    /// The status it was answered with.
    pub status: u16,
    pub at: Instant,
}

#[derive(Debug)]
struct State {
    oauth: Vec<OAuthRequest>,
    sends: Vec<FcmRequest>,
    scripts: HashMap<String, VecDeque<FcmReply>>,
    unregistered: HashSet<String>,
    outage: Option<String>,
    token_lifetime: u64,
    /// Issued access tokens and when they expire.
    issued: HashMap<String, Instant>,
    oauth_delay: Duration,
    oauth_failure: Option<(u16, serde_json::Value)>,
}

/// See the module documentation. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeFcm {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    private_pem: String,
    task: tokio::task::JoinHandle<()>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FakeFcm {
    /// Starts the server on a free loopback port with a fresh RSA key.
    pub async fn start() -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
            .expect("generating the service-account RSA key");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the fake FCM server");
        let addr = listener.local_addr().expect("its address");
        let state = Arc::new(Mutex::new(State {
            oauth: Vec::new(),
            sends: Vec::new(),
            scripts: HashMap::new(),
            unregistered: HashSet::new(),
            outage: None,
            token_lifetime: 3600,
            issued: HashMap::new(),
            oauth_delay: Duration::ZERO,
            oauth_failure: None,
        }));
        let server = Server {
            state: state.clone(),
            public_pem: key.public_key_pem(),
            token_url: format!("http://{addr}/token"),
        };
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let server = server.clone();
                let service = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, std::convert::Infallible>(server.handle(req).await) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(sock), service),
                );
            }
        });
        Self {
            addr,
            state,
            private_pem: key.serialize_pem(),
            task,
        }
    }

    pub fn project_id(&self) -> &'static str {
        FAKE_FCM_PROJECT
    }

    /// What `FCM_BASE_URL` points at.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The OAuth2 token endpoint (also the key file's `token_uri`).
    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// A service-account key file's JSON, as the Google Cloud console
    /// downloads it, pointing at this server's token endpoint.
    pub fn service_account_json(&self) -> String {
        serde_json::json!({
            "type": "service_account",
            "project_id": FAKE_FCM_PROJECT,
            "private_key_id": FAKE_FCM_KEY_ID,
            "private_key": self.private_pem,
            "client_email": FAKE_FCM_CLIENT_EMAIL,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_url(),
        })
        .to_string()
    }

    /// Writes the key file into `dir`; returns its path
    /// (for `GOOGLE_APPLICATION_CREDENTIALS`).
    pub fn write_credentials(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("service-account-{}.json", crate::unique_suffix()));
        std::fs::write(&path, self.service_account_json()).expect("writing the key file");
        path
    }

    /// Queues answers for the next sends to `token`; after them, the default
    /// (delivered, or unregistered) applies again.
    pub fn script(&self, token: &str, replies: impl IntoIterator<Item = FcmReply>) {
        lock(&self.state)
            .scripts
            .entry(token.to_owned())
            .or_default()
            .extend(replies);
    }

    /// From now on sends to `token` get UNREGISTERED.
    pub fn unregister(&self, token: &str) {
        lock(&self.state).unregistered.insert(token.to_owned());
    }

    /// Every send gets 503 UNAVAILABLE with this `Retry-After` until
    /// [`end_outage`](Self::end_outage).
    pub fn begin_outage(&self, retry_after: &str) {
        lock(&self.state).outage = Some(retry_after.to_owned());
    }

    pub fn end_outage(&self) {
        lock(&self.state).outage = None;
    }

    /// `expires_in` of the access tokens issued from now on (default 3600).
    pub fn set_token_lifetime(&self, secs: u64) {
        lock(&self.state).token_lifetime = secs;
    }

    /// Every access token issued so far is refused with 401 from now on.
    pub fn revoke_access_tokens(&self) {
        lock(&self.state).issued.clear();
    }

    /// The token endpoint takes this long to answer (widens races).
    pub fn set_oauth_delay(&self, delay: Duration) {
        lock(&self.state).oauth_delay = delay;
    }

    /// The token endpoint answers `status` with `{"error": error}` until
    /// [`heal_oauth`](Self::heal_oauth).
    pub fn fail_oauth(&self, status: u16, error: &str, description: &str) {
        lock(&self.state).oauth_failure = Some((
            status,
            serde_json::json!({"error": error, "error_description": description}),
        ));
    }

    pub fn heal_oauth(&self) {
        lock(&self.state).oauth_failure = None;
    }

    pub fn oauth_requests(&self) -> Vec<OAuthRequest> {
        lock(&self.state).oauth.clone()
    }

    pub fn sends(&self) -> Vec<FcmRequest> {
        lock(&self.state).sends.clone()
    }

    /// The sends addressed to `token`, in order.
    pub fn sends_to(&self, token: &str) -> Vec<FcmRequest> {
        self.sends()
            .into_iter()
            .filter(|r| r.token.as_deref() == Some(token))
            .collect()
    }

    /// The tokens messages were accepted (200) for, in order.
    pub fn delivered(&self) -> Vec<String> {
        self.sends()
            .into_iter()
            .filter(|r| r.status == 200)
            .filter_map(|r| r.token)
            .collect()
    }
}

impl Drop for FakeFcm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

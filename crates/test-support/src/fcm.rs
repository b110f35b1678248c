//! A local stand-in for Google's OAuth2 token endpoint and the FCM HTTP v1
//! API: a real HTTP/1.1 server on loopback that checks the service-account
//! assertion's signature with the key it handed out, issues access tokens,
//! answers sends as scripted, and records every request.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

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
                tokio::spawn(async move { server.connection(sock).await });
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

#[derive(Clone)]
struct Server {
    state: Arc<Mutex<State>>,
    public_pem: String,
    token_url: String,
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Response {
    fn json(status: u16, body: &serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json; charset=UTF-8".into())],
            body: body.to_string(),
        }
    }
}

const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// Reads one request (keep-alive: `buf` carries what follows it).
async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_REQUEST_BYTES {
            return None;
        }
        let mut chunk = [0u8; 8192];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if len > MAX_REQUEST_BYTES {
        return None;
    }
    let start = head_end + 4;
    while buf.len() < start + len {
        let mut chunk = [0u8; 8192];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[start..start + len].to_vec();
    buf.drain(..start + len);
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

impl Server {
    async fn connection(&self, mut sock: TcpStream) {
        let mut buf = Vec::new();
        while let Some(req) = read_request(&mut sock, &mut buf).await {
            let close = req
                .headers
                .get("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
            let res = self.answer(req).await;
            let mut out = format!("HTTP/1.1 {} X\r\n", res.status);
            for (k, v) in &res.headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str(&format!("content-length: {}\r\n\r\n", res.body.len()));
            out.push_str(&res.body);
            if sock.write_all(out.as_bytes()).await.is_err() || close {
                return;
            }
        }
    }

    async fn answer(&self, req: Request) -> Response {
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/token") => self.token(&req).await,
            ("POST", path)
                if path.starts_with("/v1/projects/") && path.ends_with("/messages:send") =>
            {
                self.send(&req)
            }
            _ => Response::json(
                404,
                &serde_json::json!({"error": {"code": 404, "status": "NOT_FOUND"}}),
            ),
        }
    }

    async fn token(&self, req: &Request) -> Response {
        let delay = lock(&self.state).oauth_delay;
        tokio::time::sleep(delay).await;
        let form: HashMap<String, String> = url::form_urlencoded::parse(&req.body)
            .into_owned()
            .collect();
        let grant_type = form.get("grant_type").cloned().unwrap_or_default();
        let assertion = form.get("assertion").cloned().unwrap_or_default();
        let part = |i: usize| -> serde_json::Value {
            assertion
                .split('.')
                .nth(i)
                .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(serde_json::Value::Null)
        };
        let signature_valid = self.verify(&assertion);
        let mut s = lock(&self.state);
        let mut record = OAuthRequest {
            grant_type: grant_type.clone(),
            header: part(0),
            claims: part(1),
            signature_valid,
            issued: None,
            at: Instant::now(),
        };
        let res = if let Some((status, body)) = s.oauth_failure.clone() {
            Response::json(status, &body)
        } else if grant_type != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
            Response::json(
                400,
                &serde_json::json!({"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}),
            )
        } else if !signature_valid {
            Response::json(
                400,
                &serde_json::json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
            )
        } else {
            let token = format!("ya29.fake-{}", crate::unique_suffix());
            let lifetime = s.token_lifetime;
            s.issued.insert(
                token.clone(),
                Instant::now() + Duration::from_secs(lifetime),
            );
            record.issued = Some(token.clone());
            Response::json(
                200,
                &serde_json::json!({"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}),
            )
        };
        s.oauth.push(record);
        res
    }

    /// RS256 with the handed-out key, audience the token endpoint, issued
    /// by the service account, not expired, scoped to FCM.
    fn verify(&self, assertion: &str) -> bool {
        let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(self.public_pem.as_bytes()) else {
            return false;
        };
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.set_audience(&[&self.token_url]);
        v.set_issuer(&[FAKE_FCM_CLIENT_EMAIL]);
        v.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
        jsonwebtoken::decode::<serde_json::Value>(assertion, &key, &v).is_ok_and(|d| {
            d.claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
        })
    }

    fn send(&self, req: &Request) -> Response {
        let body: serde_json::Value =
            serde_json::from_slice(&req.body).unwrap_or(serde_json::Value::Null);
        let token = body["message"]["token"].as_str().map(str::to_owned);
        let authorization = req.headers.get("authorization").cloned();
        let mut s = lock(&self.state);
        let bearer_ok = authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .and_then(|t| s.issued.get(t))
            .is_some_and(|expires| Instant::now() < *expires);
        let expected_path = format!("/v1/projects/{FAKE_FCM_PROJECT}/messages:send");
        let reply = if !bearer_ok {
            FcmReply::error(
                401,
                "UNAUTHENTICATED",
                None,
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            )
        } else if req.path != expected_path {
            FcmReply::error(
                403,
                "PERMISSION_DENIED",
                None,
                "Permission denied for this project.",
            )
        } else if let Some(retry_after) = s.outage.clone() {
            FcmReply::unavailable().with_retry_after(&retry_after)
        } else if token.is_none() {
            FcmReply::error(
                400,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                "Recipient of the message is not set.",
            )
        } else if let Some(r) = token
            .as_ref()
            .and_then(|t| s.scripts.get_mut(t))
            .and_then(VecDeque::pop_front)
        {
            r
        } else if token.as_ref().is_some_and(|t| s.unregistered.contains(t)) {
            FcmReply::unregistered()
        } else {
            FcmReply::ok()
        };
        s.sends.push(FcmRequest {
            path: req.path.clone(),
            authorization,
            content_type: req.headers.get("content-type").cloned(),
            body,
            token,
            status: reply.status,
            at: Instant::now(),
        });
        let n = s.sends.len();
        drop(s);
        let body = reply.body.unwrap_or_else(
            || serde_json::json!({"name": format!("projects/{FAKE_FCM_PROJECT}/messages/{n}")}),
        );
        let mut res = Response::json(reply.status, &body);
        if let Some(v) = reply.retry_after {
            res.headers.push(("retry-after", v));
        }
        res
    }
}

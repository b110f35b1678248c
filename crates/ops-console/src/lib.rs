//! The operators' console: the job queues and their jobs on a web page,
//! served by the app under `/ops`, over the admin ports (`ports::QueueAdmin`).
//!
//! # Layout
//!
//! - this file: mounting and the CSRF token;
//! - `access.rs`: who gets in (loopback, or operators who sign in);
//! - `pages.rs`: the layout and the overview (server-rendered with maud);
//! - `jobs.rs`: a queue's jobs, and one job's page;
//! - `actions.rs`: what a button does (every one a POST with the token);
//! - `events.rs`: the outbox and the event streams' groups and dead
//!   letters, and replaying them;
//! - `users.rs`: support's view of one user.
//!
//! **Access** (`access.rs`): locally, anyone on loopback; elsewhere only
//! operators who signed in, admins acting and viewers looking.

mod access;
mod actions;
mod events;
mod jobs;
mod pages;
mod redact;
mod users;

pub use access::{
    Access, MAX_FAILED_SIGN_INS, Role, SESSION_COOKIE, SignIn, THROTTLE_WINDOW, TokenSignIn,
    hash_password, is_password_hash,
};
pub(crate) use access::{Operator, admit, admit_admin, refused_page};

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use ports::{EventAdmin, Instances, QueueAdmin, SocketRegistry, SupportAdmin};
use std::sync::Arc;

/// The cookie that carries the CSRF token (double submit: every form
/// carries the same value, and a cross-site page can read neither).
pub const CSRF_COOKIE: &str = "trellis_ops_csrf";

/// Every page's Content-Security-Policy: only this app's own assets.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What the console works on.
#[derive(Clone)]
pub struct OpsConsole {
    pub(crate) queues: Arc<dyn QueueAdmin>,
    /// The event streams and the topics to show.
    pub(crate) events: Option<(Arc<dyn EventAdmin>, Vec<String>)>,
    pub(crate) access: Access,
    pub(crate) instances: Option<Arc<dyn Instances>>,
    /// Users and the outbox, from the database.
    pub(crate) support: Option<Arc<dyn SupportAdmin>>,
    /// Each user's open sockets per instance.
    pub(crate) sockets: Option<Arc<dyn SocketRegistry>>,
    /// Failed sign-ins per client (shared by every HTTP worker).
    pub(crate) throttle: Arc<access::Throttle>,
    /// The proxies whose `X-Forwarded-For` names the client (the API's
    /// `TRUST_FORWARDED_FOR`).
    pub(crate) trusted_proxies: Vec<domain::network::Cidr>,
    /// Each operator's session version.
    pub(crate) sessions: Arc<access::SessionVersions>,
}

impl std::fmt::Debug for OpsConsole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsConsole").finish_non_exhaustive()
    }
}

impl OpsConsole {
    pub fn new(queues: Arc<dyn QueueAdmin>) -> Self {
        Self {
            queues,
            events: None,
            access: Access::Loopback,
            instances: None,
            support: None,
            sockets: None,
            throttle: Arc::default(),
            trusted_proxies: Vec::new(),
            sessions: Arc::default(),
        }
    }

    /// The proxies in front of the console (`TRUST_FORWARDED_FOR`): the
    /// sign-in throttle counts the client behind them, as the API's rate
    /// limits do, not the proxy every operator shares.
    pub fn with_trusted_proxies(mut self, proxies: Vec<domain::network::Cidr>) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// Keeps session versions in `cache` (Redis), so that a sign-out ends
    /// the operator's sessions on every instance.
    pub fn with_session_store(mut self, cache: Arc<dyn ports::Cache>) -> Self {
        self.sessions = Arc::new(access::SessionVersions::Shared(cache));
        self
    }

    /// The client's bucket, as the API's rate limits name it.
    pub(crate) fn client_bucket(&self, req: &HttpRequest) -> String {
        let ip = req.peer_addr().map(|peer| {
            let forwarded = req
                .headers()
                .get_all("x-forwarded-for")
                .filter_map(|v| v.to_str().ok());
            domain::network::client_ip(peer.ip(), forwarded, &self.trusted_proxies)
        });
        domain::network::client_bucket(ip)
    }

    /// A user's open sockets on the users page (counted per live instance).
    pub fn with_sockets(mut self, sockets: Arc<dyn SocketRegistry>) -> Self {
        self.sockets = Some(sockets);
        self
    }

    /// The users page and the outbox's backlog.
    pub fn with_support(mut self, support: Arc<dyn SupportAdmin>) -> Self {
        self.support = Some(support);
        self
    }

    /// Lists the live instances (their heartbeats) on the overview.
    pub fn with_instances(mut self, instances: Arc<dyn Instances>) -> Self {
        self.instances = Some(instances);
        self
    }

    /// Who gets in ([`Access::Loopback`] unless told otherwise).
    pub fn with_access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Shows the dead letters of `topics`' streams, with replay.
    pub fn with_events(mut self, events: Arc<dyn EventAdmin>, topics: Vec<String>) -> Self {
        self.events = Some((events, topics));
        self
    }
}

/// Mounts the console under `/ops`.
pub fn configure(console: OpsConsole) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.service(
            web::scope("/ops")
                .app_data(web::Data::new(console))
                // A malformed or oversized form gets the console's own page.
                .app_data(
                    web::FormConfig::default()
                        .limit(4096)
                        .error_handler(|e, _req| {
                            let res = pages::refusal(
                                actix_web::http::StatusCode::BAD_REQUEST,
                                "That form could not be read. Reload the page and try again.",
                            );
                            actix_web::error::InternalError::from_response(e, res).into()
                        }),
                )
                .route("", web::get().to(pages::overview))
                .route("/", web::get().to(pages::overview))
                .route("/fragments/queues", web::get().to(pages::queues_fragment))
                .route("/queues/{queue}", web::get().to(jobs::queue))
                .route(
                    "/queues/{queue}/retry-kind",
                    web::post().to(actions::retry_kind),
                )
                .route("/jobs/{id}", web::get().to(jobs::job))
                .route("/jobs/{id}/run-now", web::post().to(actions::run_now))
                .route("/queues/{queue}/pause", web::post().to(actions::pause))
                .route("/queues/{queue}/resume", web::post().to(actions::resume))
                .route("/jobs/{id}/retry", web::post().to(actions::retry))
                .route("/jobs/{id}/delete", web::post().to(actions::delete))
                .route("/events", web::get().to(events::page))
                .route("/users", web::get().to(users::page))
                .route(
                    "/events/{topic}/replay/{id}",
                    web::post().to(events::replay),
                )
                .route(
                    "/events/{topic}/replay-all",
                    web::post().to(events::replay_all),
                )
                .route("/login", web::get().to(access::login_page))
                .route("/login", web::post().to(access::login))
                .route("/logout", web::post().to(access::logout))
                .route("/assets/ops.css", web::get().to(css))
                .route("/assets/ops.js", web::get().to(js)),
        );
    }
}

/// Why a request is not served: a status and a sentence for the page.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refusal {
    pub(crate) status: actix_web::http::StatusCode,
    pub(crate) why: &'static str,
}

impl Refusal {
    pub(crate) fn response(self) -> HttpResponse {
        pages::refusal(self.status, self.why)
    }
}

/// The request's CSRF token, and the cookie to set when it had none.
pub(crate) fn csrf_token(req: &HttpRequest) -> (String, Option<Cookie<'static>>) {
    if let Some(c) = req.cookie(CSRF_COOKIE)
        && valid_token(c.value())
    {
        return (c.value().to_owned(), None);
    }
    let token: String = rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let cookie = Cookie::build(CSRF_COOKIE, token.clone())
        .path("/ops")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(req.connection_info().scheme() == "https")
        .finish();
    (token, Some(cookie))
}

fn valid_token(t: &str) -> bool {
    t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `sent` (a form field) is the token of the request's cookie,
/// compared in constant time.
pub(crate) fn csrf_ok(req: &HttpRequest, sent: &str) -> bool {
    let Some(cookie) = req.cookie(CSRF_COOKIE) else {
        return false;
    };
    let expected = cookie.value().as_bytes();
    valid_token(sent)
        && sent.len() == expected.len()
        && sent
            .bytes()
            .zip(expected)
            .fold(0_u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn css() -> HttpResponse {
    asset("text/css; charset=utf-8", include_str!("../assets/ops.css"))
}

async fn js() -> HttpResponse {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../assets/ops.js"),
    )
}

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .body(body)
}

/// An HTML response with the console's CSP.
pub(crate) fn html(status: actix_web::http::StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .body(body)
}

/// "3 min ago", "in 2 h", "just now".
pub(crate) fn relative(at_ms: i64, now_ms: i64) -> String {
    let d = (now_ms - at_ms) / 1000;
    let (n, unit) = match d.abs() {
        s if s < 5 => return "just now".into(),
        s if s < 60 => (s, "s"),
        s if s < 3600 => (s / 60, "min"),
        s if s < 86_400 => (s / 3600, "h"),
        s => (s / 86_400, "d"),
    };
    if d >= 0 {
        format!("{n} {unit} ago")
    } else {
        format!("in {n} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_people_say_them() {
        let now = 1_000_000_000;
        assert_eq!(relative(now - 2_000, now), "just now");
        assert_eq!(relative(now - 42_000, now), "42 s ago");
        assert_eq!(relative(now - 180_000, now), "3 min ago");
        assert_eq!(relative(now - 7_200_000, now), "2 h ago");
        assert_eq!(relative(now - 3 * 86_400_000, now), "3 d ago");
        assert_eq!(relative(now + 120_000, now), "in 2 min");
    }
}

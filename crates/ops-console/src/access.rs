//! Who gets in: on a developer's machine anyone on loopback whose request
//! no proxy forwarded; elsewhere an operator who signed in with a password
//! (stored as an argon2 hash, checked on a blocking thread) or a Firebase
//! ID token with the operator claim, and holds a session cookie signed by
//! the server (HMAC-SHA256; `HttpOnly`, `Secure`, `SameSite=Strict`). An
//! operator is an admin or a viewer: a viewer can look but not act.
//!
//! A session names its operator (the password's role, or the token's uid)
//! and the server-side session version it was issued under; signing out
//! moves that operator's version on (in the shared cache when there is
//! one), which ends every session of theirs. A session from a token lasts
//! no longer than the token: an operator whose claim was taken away is out
//! once the token they signed in with expires (within the hour).
//!
//! Longer than 450 lines: sign-in (password and token), sessions, roles and
//! the CSRF and proxy rules are one security boundary, kept in one file to be
//! read and reviewed as one.

use crate::pages::{layout, refusal, send};
use crate::{OpsConsole, Refusal, csrf_ok, csrf_token};
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use argon2::password_hash::{PasswordHash, PasswordVerifier as _};
use hmac::{Hmac, Mac as _};
use maud::html as markup;
use serde::Deserialize;
use std::time::Duration;

/// The session cookie.
pub const SESSION_COOKIE: &str = "trellis_ops_session";

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Looks and acts.
    Admin,
    /// Looks only.
    Viewer,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Viewer => "viewer",
        }
    }
}

/// How the console lets people in.
#[derive(Debug, Clone)]
pub enum Access {
    /// Anyone whose TCP peer is a loopback address (local development).
    Loopback,
    /// Operators who sign in.
    SignIn(SignIn),
}

/// Sign-in settings.
#[derive(Clone)]
pub struct SignIn {
    /// argon2 PHC strings (`$argon2id$...`) and the role each one grants.
    pub passwords: Vec<(Role, String)>,
    /// Signs session cookies (at least 32 bytes; the same on every instance).
    pub session_key: Vec<u8>,
    pub session_ttl: Duration,
    /// Mark cookies `Secure` (off only for plain-http tests).
    pub secure_cookies: bool,
    /// Sign-in with a Firebase ID token whose custom claim names the role.
    pub token: Option<TokenSignIn>,
}

/// Firebase ID tokens that carry custom claim `claim`: `true` or `"admin"`
/// makes an admin, `"viewer"` a viewer; any other value, or none, is not an
/// operator.
#[derive(Clone)]
pub struct TokenSignIn {
    pub verifier: std::sync::Arc<dyn ports::TokenVerifier>,
    pub claim: String,
}

impl std::fmt::Debug for TokenSignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSignIn")
            .field("claim", &self.claim)
            .finish_non_exhaustive()
    }
}

impl TokenSignIn {
    fn role(&self, id: &domain::VerifiedIdentity) -> Option<Role> {
        match id.custom_claims.get(&self.claim)? {
            serde_json::Value::Bool(true) => Some(Role::Admin),
            serde_json::Value::String(s) if s == "admin" => Some(Role::Admin),
            serde_json::Value::String(s) if s == "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// The hashes and the key are never printed.
impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn")
            .field("passwords", &self.passwords.len())
            .field("session_ttl", &self.session_ttl)
            .field("secure_cookies", &self.secure_cookies)
            .field("token_claim", &self.token.as_ref().map(|t| &t.claim))
            .finish_non_exhaustive()
    }
}

/// Failed sign-ins allowed per client within [`THROTTLE_WINDOW`]; past
/// that every sign-in from it is refused (429) until the window ends. A
/// client is what the API's rate limits count: its address behind the
/// trusted proxies (`TRUST_FORWARDED_FOR`), an IPv6 client by its /64.
pub const MAX_FAILED_SIGN_INS: u32 = 10;
/// See [`MAX_FAILED_SIGN_INS`].
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(60);

/// Failed sign-ins per client bucket, shared by every worker of a console:
/// a password cannot be guessed faster than [`MAX_FAILED_SIGN_INS`] a
/// minute per client (the argon2 check itself costs tens of ms).
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    failures: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, u32)>>,
}

impl Throttle {
    fn blocked(&self, ip: &str) -> bool {
        let Ok(map) = self.failures.lock() else {
            return false;
        };
        map.get(ip).is_some_and(|(since, n)| {
            since.elapsed() < THROTTLE_WINDOW && *n >= MAX_FAILED_SIGN_INS
        })
    }

    fn failed(&self, ip: &str) {
        let Ok(mut map) = self.failures.lock() else {
            return;
        };
        if map.len() >= 10_000 {
            map.retain(|_, (since, _)| since.elapsed() < THROTTLE_WINDOW);
        }
        let entry = map
            .entry(ip.to_owned())
            .or_insert((std::time::Instant::now(), 0));
        if entry.0.elapsed() >= THROTTLE_WINDOW {
            *entry = (std::time::Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

/// The server-side session version of each operator: a session is valid
/// only while its operator's version is the one it was issued under.
pub(crate) enum SessionVersions {
    /// In the shared cache (Redis): every instance agrees.
    Shared(std::sync::Arc<dyn ports::Cache>),
    /// In this process (a console without a cache: tests, one instance).
    Local(std::sync::Mutex<std::collections::HashMap<String, u64>>),
}

impl Default for SessionVersions {
    fn default() -> Self {
        Self::Local(std::sync::Mutex::default())
    }
}

impl std::fmt::Debug for SessionVersions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Shared(_) => "SessionVersions::Shared",
            Self::Local(_) => "SessionVersions::Local",
        })
    }
}

/// How long a version counter lives in the cache: longer than any session
/// issued before it moved (a counter that expires resets to 0, which ends
/// the sessions issued since, never revives older ones).
const VERSION_TTL: Duration = Duration::from_secs(31 * 24 * 3600);

impl SessionVersions {
    fn key(subject: &str) -> String {
        let hex: String = subject.bytes().map(|b| format!("{b:02x}")).collect();
        format!("ops:session-version:{hex}")
    }

    async fn current(&self, subject: &str) -> Result<u64, ports::CacheError> {
        match self {
            Self::Shared(cache) => Ok(cache
                .get(&Self::key(subject))
                .await?
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)),
            Self::Local(map) => Ok(map
                .lock()
                .map(|m| m.get(subject).copied().unwrap_or(0))
                .unwrap_or(u64::MAX)),
        }
    }

    /// Ends every session of `subject`.
    async fn end(&self, subject: &str) -> Result<(), ports::CacheError> {
        match self {
            Self::Shared(cache) => cache
                .incr_window(&Self::key(subject), VERSION_TTL)
                .await
                .map(|_| ()),
            Self::Local(map) => {
                if let Ok(mut m) = map.lock() {
                    *m.entry(subject.to_owned()).or_default() += 1;
                }
                Ok(())
            }
        }
    }
}

/// Who is acting (logged with every action) and what they may do.
#[derive(Debug, Clone)]
pub(crate) struct Operator {
    pub(crate) name: String,
    pub(crate) role: Role,
    /// Whose sessions a sign-out ends: `password:<role>` or `uid:<uid>`.
    pub(crate) subject: String,
    /// The session version this session was issued under.
    pub(crate) version: u64,
}

/// Headers a proxy adds: a request carrying one came through a proxy,
/// however local its TCP peer looks.
const FORWARDING_HEADERS: &[&str] = &["forwarded", "x-forwarded-for", "x-real-ip", "via"];

/// Lets the request in, or says why not.
pub(crate) async fn admit(req: &HttpRequest, console: &OpsConsole) -> Result<Operator, Refusal> {
    match &console.access {
        Access::Loopback => {
            let proxied = FORWARDING_HEADERS
                .iter()
                .any(|h| req.headers().contains_key(*h));
            match req.peer_addr() {
                Some(peer) if peer.ip().is_loopback() && !proxied => Ok(Operator {
                    name: format!("local ({peer})"),
                    role: Role::Admin,
                    subject: "local".into(),
                    version: 0,
                }),
                _ => Err(Refusal {
                    status: StatusCode::FORBIDDEN,
                    why: "The ops console opens on this machine only (loopback, not through a proxy).",
                }),
            }
        }
        Access::SignIn(s) => {
            let signed_out = Refusal {
                status: StatusCode::UNAUTHORIZED,
                why: "Sign in first.",
            };
            let who = req
                .cookie(SESSION_COOKIE)
                .and_then(|c| open_session(&s.session_key, c.value(), now_secs()))
                .ok_or(signed_out)?;
            match console.sessions.current(&who.subject).await {
                Ok(v) if v == who.version => Ok(who),
                Ok(_) => Err(signed_out),
                Err(e) => {
                    tracing::warn!(error = %e, "ops console: cannot check a session's version");
                    Err(Refusal {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        why: "Your session cannot be checked right now. Try again shortly.",
                    })
                }
            }
        }
    }
}

/// What a page answers when `admit` refused: the sign-in page for someone
/// without a session, else the refusal.
pub(crate) fn refused_page(refusal: Refusal) -> HttpResponse {
    if refusal.status == StatusCode::UNAUTHORIZED {
        HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/ops/login"))
            .finish()
    } else {
        refusal.response()
    }
}

/// Admits an operator who may act.
pub(crate) async fn admit_admin(
    req: &HttpRequest,
    console: &OpsConsole,
) -> Result<Operator, Refusal> {
    let who = admit(req, console).await?;
    if who.role != Role::Admin {
        tracing::warn!(operator = %who.name, path = %req.path(), "ops console: a viewer tried to act");
        return Err(Refusal {
            status: StatusCode::FORBIDDEN,
            why: "Your role can look but not act.",
        });
    }
    Ok(who)
}

/// The argon2id hash (a PHC string) of `password`, with a random salt: what
/// `OPS_PASSWORD_HASH` holds (`app ops-password` prints it).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher as _, SaltString};
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `hash` is an argon2 PHC string this console can check.
pub fn is_password_hash(hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| h.algorithm.as_str().starts_with("argon2"))
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

type HmacSha256 = Hmac<sha2::Sha256>;

fn sign(key: &[u8], payload: &str) -> String {
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        return String::new();
    };
    mac.update(payload.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// `v2.<expires>.<role>.<name as hex>.<subject as hex>.<version>.<hmac>`.
fn seal_session(key: &[u8], who: &Operator, expires: i64) -> String {
    let payload = format!(
        "v2.{expires}.{}.{}.{}.{}",
        who.role.as_str(),
        hex(&who.name),
        hex(&who.subject),
        who.version
    );
    let mac = sign(key, &payload);
    format!("{payload}.{mac}")
}

fn open_session(key: &[u8], value: &str, now: i64) -> Option<Operator> {
    let (payload, mac) = value.rsplit_once('.')?;
    let expected = sign(key, payload);
    if expected.is_empty()
        || mac.len() != expected.len()
        || mac
            .bytes()
            .zip(expected.bytes())
            .fold(0_u8, |acc, (a, b)| acc | (a ^ b))
            != 0
    {
        return None;
    }
    let mut parts = payload.split('.');
    let mut next = || parts.next();
    let (v, expires, role, name, subject, version) =
        (next()?, next()?, next()?, next()?, next()?, next()?);
    if v != "v2" || next().is_some() || expires.parse::<i64>().ok()? <= now {
        return None;
    }
    let role = match role {
        "admin" => Role::Admin,
        "viewer" => Role::Viewer,
        _ => return None,
    };
    Some(Operator {
        name: unhex(name)?,
        role,
        subject: unhex(subject)?,
        version: version.parse().ok()?,
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    csrf: String,
    password: Option<String>,
    id_token: Option<String>,
}

/// `GET /ops/login`.
pub(crate) async fn login_page(req: HttpRequest, console: web::Data<OpsConsole>) -> HttpResponse {
    if matches!(console.access, Access::Loopback) {
        return HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/ops"))
            .finish();
    }
    let (csrf, cookie) = csrf_token(&req);
    send(StatusCode::OK, login_html(&console, &csrf, None), cookie)
}

fn login_html(console: &OpsConsole, csrf: &str, error: Option<&str>) -> String {
    let (passwords, token) = match &console.access {
        Access::SignIn(s) => (!s.passwords.is_empty(), s.token.is_some()),
        Access::Loopback => (false, false),
    };
    layout(
        "Sign in",
        markup! {
            @if let Some(e) = error { p.notice.bad { (e) } }
            @if passwords {
                form.login method="post" action="/ops/login" {
                    input type="hidden" name="csrf" value=(csrf);
                    label { "Operator password " input type="password" name="password" autocomplete="current-password" required; }
                    " "
                    button type="submit" { "Sign in" }
                }
            }
            @if token {
                form.login method="post" action="/ops/login" {
                    input type="hidden" name="csrf" value=(csrf);
                    label { "Firebase ID token " input type="password" name="id_token" autocomplete="off" required; }
                    " "
                    button type="submit" { "Sign in with the token" }
                }
            }
        },
    )
}

/// `POST /ops/login`: a password that matches one of the hashes starts a
/// session with that hash's role.
pub(crate) async fn login(
    req: HttpRequest,
    console: web::Data<OpsConsole>,
    form: web::Form<LoginForm>,
) -> HttpResponse {
    let Access::SignIn(s) = &console.access else {
        return refusal(
            StatusCode::NOT_FOUND,
            "There is nothing to sign in to here.",
        );
    };
    if !csrf_ok(&req, &form.csrf) {
        return refusal(
            StatusCode::FORBIDDEN,
            "The sign-in form came without a valid token. Reload the page and try again.",
        );
    }
    // The client as the API's limits count it (behind trusted proxies,
    // an IPv6 client by its /64): a client cannot lock others out.
    let peer = console.client_bucket(&req);
    let ip = peer.as_str();
    if console.throttle.blocked(ip) {
        tracing::warn!(peer = %peer, "ops console: sign-ins refused, too many failures");
        return refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed sign-ins from your address. Wait a minute and try again.",
        );
    }
    let refuse = |why: &str| {
        console.throttle.failed(ip);
        tracing::warn!(peer = %peer, why, "ops console: a sign-in refused");
        let (csrf, _) = csrf_token(&req);
        crate::html(
            StatusCode::UNAUTHORIZED,
            login_html(&console, &csrf, Some(why)),
        )
    };
    let ttl = i64::try_from(s.session_ttl.as_secs()).unwrap_or(i64::MAX / 2);
    let mut expires = now_secs().saturating_add(ttl);
    let mut who = match (&form.password, &form.id_token, &s.token) {
        (Some(password), _, _) if !s.passwords.is_empty() => {
            // argon2 takes tens of milliseconds of CPU: never on an async
            // worker, where it would stall every request it serves.
            let (password, hashes) = (password.clone(), s.passwords.clone());
            let role = web::block(move || {
                hashes.iter().find_map(|(role, hash)| {
                    let parsed = PasswordHash::new(hash).ok()?;
                    argon2::Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .ok()
                        .map(|()| *role)
                })
            })
            .await
            .ok()
            .flatten();
            let Some(role) = role else {
                return refuse("That password is not right.");
            };
            Operator {
                name: format!("{} operator from {peer}", role.as_str()),
                role,
                subject: format!("password:{}", role.as_str()),
                version: 0,
            }
        }
        (_, Some(token), Some(t)) => {
            let Ok(id) = t.verifier.verify(token.trim()).await else {
                return refuse("That ID token is not valid (expired, or not this project's).");
            };
            let Some(role) = t.role(&id) else {
                return refuse("That account is not an operator.");
            };
            // No longer than the token that proved the claim.
            if let Some(at) = id.expires_at {
                expires = expires.min(at.timestamp());
            }
            Operator {
                name: format!("{} {}", id.uid.as_str(), id.email.as_deref().unwrap_or(""))
                    .trim()
                    .to_owned(),
                role,
                subject: format!("uid:{}", id.uid.as_str()),
                version: 0,
            }
        }
        _ => return refuse("Sign in with one of the forms below."),
    };
    who.version = match console.sessions.current(&who.subject).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "ops console: cannot read the session version");
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sessions cannot be started right now. Try again shortly.",
            );
        }
    };
    let role = who.role;
    let ttl = expires.saturating_sub(now_secs()).max(0);
    let value = seal_session(&s.session_key, &who, expires);
    let cookie = Cookie::build(SESSION_COOKIE, value)
        .path("/ops")
        .http_only(true)
        .secure(s.secure_cookies)
        .same_site(SameSite::Strict)
        .max_age(actix_web::cookie::time::Duration::seconds(ttl))
        .finish();
    tracing::info!(operator = %who.name, role = role.as_str(), "ops console: signed in");
    let mut res = HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/ops"))
        .finish();
    let _ = res.add_cookie(&cookie);
    res
}

/// `POST /ops/logout`: ends the operator's sessions (on every browser and
/// instance), not only this cookie.
pub(crate) async fn logout(
    req: HttpRequest,
    console: web::Data<OpsConsole>,
    form: web::Form<crate::actions::ActionForm>,
) -> HttpResponse {
    if !csrf_ok(&req, form.csrf()) {
        return refusal(StatusCode::FORBIDDEN, "No valid form token.");
    }
    if let (Access::SignIn(_), Ok(who)) = (&console.access, admit(&req, &console).await) {
        if let Err(e) = console.sessions.end(&who.subject).await {
            tracing::warn!(error = %e, "ops console: cannot end the operator's sessions");
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "Your session could not be ended right now. Try again shortly.",
            );
        }
        tracing::info!(operator = %who.name, "ops console: signed out");
    }
    let mut gone = Cookie::build(SESSION_COOKIE, "").path("/ops").finish();
    gone.make_removal();
    let mut res = HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/ops/login"))
        .finish();
    let _ = res.add_cookie(&gone);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_opens_only_unexpired_untampered_and_with_its_key() {
        let key = b"0123456789abcdef0123456789abcdef";
        let who = Operator {
            name: "viewer operator from 10.0.0.1".into(),
            role: Role::Viewer,
            subject: "password:viewer".into(),
            version: 7,
        };
        let sealed = seal_session(key, &who, 2_000);
        let opened = open_session(key, &sealed, 1_000).unwrap();
        assert_eq!(
            (
                opened.name.as_str(),
                opened.role,
                opened.subject.as_str(),
                opened.version
            ),
            (who.name.as_str(), Role::Viewer, "password:viewer", 7)
        );
        assert!(open_session(key, &sealed, 2_000).is_none(), "expired");
        assert!(open_session(b"another key, also 32 bytes long!", &sealed, 1_000).is_none());
        let promoted = sealed.replacen(".viewer.", ".admin.", 1);
        assert!(open_session(key, &promoted, 1_000).is_none(), "tampered");
        let extended = sealed.replacen("v2.2000.", "v2.9999.", 1);
        assert!(open_session(key, &extended, 1_000).is_none(), "tampered");
        let older = sealed.replacen(".7.", ".6.", 1);
        assert!(open_session(key, &older, 1_000).is_none(), "tampered");
        for junk in ["", ".", "v1", "v1.x.admin.00.ff", "v2.x.admin.00.00.0.ff"] {
            assert!(open_session(key, junk, 1_000).is_none(), "{junk}");
        }
    }
}

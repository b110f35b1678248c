//! `GET /ws`: the authenticated upgrade and each connection's life.

use crate::envelope::{self, EnvelopeError};
use crate::handlers::HandlerContext;
use crate::hub::{ConnId, Hub};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{
    AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, ProtocolError, Session,
};
use bytestring::ByteString;
use domain::FirebaseUid;
use futures_util::FutureExt as _;
use ports::{TokenVerifier, VerifyTokenError};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// What the `/ws` route needs.
#[derive(Clone)]
struct WsState {
    hub: Hub,
    verifier: Arc<dyn TokenVerifier>,
}

/// Mounts `GET /ws` (pass it to `http_api::build_app`'s `extra`).
pub fn configure(
    hub: Hub,
    verifier: Arc<dyn TokenVerifier>,
) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(WsState { hub, verifier }))
            .route("/ws", web::get().to(upgrade));
    }
}

/// The protocol name clients offer next to their token when they cannot set
/// headers: `new WebSocket(url, ["bearer", idToken])`.
pub const BEARER_PROTOCOL: &str = "bearer";

/// The token: `Authorization: Bearer`, else `?access_token=`, else the
/// `Sec-WebSocket-Protocol` pair `bearer, <token>`.
fn token_from(req: &HttpRequest) -> Option<String> {
    if let Some(v) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, token) = v.trim().split_once(' ')?;
        return (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
            .then(|| token.trim().to_owned());
    }
    if let Some(t) = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned())
    {
        return (!t.is_empty()).then_some(t);
    }
    let offered: Vec<String> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    if offered
        .iter()
        .any(|p| p.eq_ignore_ascii_case(BEARER_PROTOCOL))
    {
        return offered
            .into_iter()
            .find(|p| !p.eq_ignore_ascii_case(BEARER_PROTOCOL));
    }
    None
}

fn problem(status: StatusCode, code: &str, detail: &str) -> HttpResponse {
    let body = serde_json::json!({
        "type": format!("urn:trellis:problem:{code}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
        "code": code,
    });
    HttpResponse::build(status)
        .content_type("application/problem+json")
        .json(body)
}

fn unauthorized() -> HttpResponse {
    let mut res = problem(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "A valid Firebase ID token is required to open a WebSocket.",
    );
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    res
}

async fn upgrade(req: HttpRequest, body: web::Payload, state: web::Data<WsState>) -> HttpResponse {
    if state.hub.is_shutting_down() {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "The server is shutting down.",
        );
    }
    let Some(token) = token_from(&req) else {
        tracing::info!("websocket refused: no token");
        return unauthorized();
    };
    let identity = match state.verifier.verify(&token).await {
        Ok(identity) => identity,
        Err(VerifyTokenError::Invalid(reason)) => {
            tracing::info!(reason = %reason, "websocket refused: token refused");
            return unauthorized();
        }
        Err(VerifyTokenError::Unavailable(e)) => {
            tracing::warn!(error = %format!("{e:#}"), "websocket refused: token keys unavailable");
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "Try again shortly.",
            );
        }
        Err(VerifyTokenError::Unknown(e)) => {
            tracing::error!(error = %format!("{e:#}"), "websocket refused: verification failed");
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Something went wrong on our side.",
            );
        }
    };
    let (response, session, stream) =
        match actix_ws::handle_with_protocols(&req, body, &[BEARER_PROTOCOL]) {
            Ok(parts) => parts,
            Err(_) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "not_a_websocket",
                    "Send a WebSocket upgrade request.",
                );
            }
        };
    let max = state.hub.settings().max_message_bytes;
    let stream = stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max);
    let (id, rx, kick) = state.hub.register(identity.uid.clone());
    tracing::info!(conn = id, uid = %identity.uid, "websocket connected");
    actix_web::rt::spawn(run(
        state.hub.clone(),
        id,
        identity.uid,
        session,
        stream,
        rx,
        kick,
    ));
    response
}

/// The close a protocol error earns.
fn close_for(e: &ProtocolError) -> CloseReason {
    match e {
        ProtocolError::Overflow => (CloseCode::Size, "message too big").into(),
        ProtocolError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            (CloseCode::Invalid, "text frames must be UTF-8").into()
        }
        ProtocolError::Io(_) => (CloseCode::Size, "message too big").into(),
        _ => (CloseCode::Protocol, "protocol error").into(),
    }
}

/// Per-connection budget of WARN lines for bad frames (a flood logs once).
const BAD_FRAME_LOGS: u32 = 5;

struct Connection {
    hub: Hub,
    id: ConnId,
    uid: FirebaseUid,
    permits: Arc<Semaphore>,
    kick: CancellationToken,
    bad_frames: u32,
}

impl Connection {
    async fn send_error(&mut self, e: &EnvelopeError) {
        self.bad_frames += 1;
        if self.bad_frames <= BAD_FRAME_LOGS {
            tracing::warn!(conn = self.id, code = e.code, message = %e.message, "bad websocket frame");
        } else if self.bad_frames == BAD_FRAME_LOGS + 1 {
            tracing::warn!(
                conn = self.id,
                "more bad frames on this connection; no longer logging them"
            );
        }
        metrics::counter!("ws_bad_frames_total", "code" => e.code).increment(1);
        self.hub
            .reply_to(self.id, ByteString::from(envelope::render_error(e)))
            .await;
    }

    async fn on_text(&mut self, text: &str) {
        let env = match envelope::parse(text) {
            Ok(env) => env,
            Err(e) => return self.send_error(&e).await,
        };
        let Some(handler) = self.hub.handler(&env.kind) else {
            metrics::counter!("ws_messages_in_total", "type" => "unknown").increment(1);
            return self
                .send_error(&EnvelopeError {
                    code: "unknown_type",
                    message: format!(
                        "no handler for type {:?}",
                        env.kind.chars().take(64).collect::<String>()
                    ),
                    id: env.id,
                })
                .await;
        };
        metrics::counter!("ws_messages_in_total", "type" => env.kind.clone()).increment(1);
        // Waiting for permits stops reading this connection: backpressure.
        let (Ok(conn_permit), Ok(hub_permit)) = (
            self.permits.clone().acquire_owned().await,
            self.hub.inner.handler_permits.clone().acquire_owned().await,
        ) else {
            return;
        };
        let ctx = HandlerContext {
            uid: self.uid.clone(),
            conn: self.id,
            id: env.id.clone(),
            cancel: self.kick.child_token(),
            hub: self.hub.clone(),
        };
        let kind = env.kind;
        actix_web::rt::spawn(async move {
            let started = Instant::now();
            let call = AssertUnwindSafe(handler.handle(&ctx, env.data)).catch_unwind();
            let outcome = tokio::select! {
                r = call => Some(r),
                () = ctx.cancel.cancelled() => None,
            };
            drop((conn_permit, hub_permit));
            metrics::histogram!("ws_handler_duration_seconds", "type" => kind.clone())
                .record(started.elapsed().as_secs_f64());
            let text = match outcome {
                None | Some(Ok(Ok(None))) => return,
                Some(Ok(Ok(Some(reply)))) => {
                    envelope::render(&reply.kind, ctx.id.as_deref(), &reply.data)
                }
                Some(Ok(Err(e))) => envelope::render_error(&EnvelopeError {
                    code: e.code,
                    message: e.message,
                    id: ctx.id.clone(),
                }),
                Some(Err(_)) => {
                    tracing::error!(conn = ctx.conn, r#type = %kind, "websocket handler panicked");
                    envelope::render_error(&EnvelopeError {
                        code: "internal_error",
                        message: "the handler failed".into(),
                        id: ctx.id.clone(),
                    })
                }
            };
            ctx.hub.reply_to(ctx.conn, ByteString::from(text)).await;
        });
    }
}

/// Sends a control frame without ever blocking the connection's loop.
async fn control(session: &mut Session, ping: bool, payload: &[u8]) -> bool {
    let send = async {
        if ping {
            session.ping(payload).await
        } else {
            session.pong(payload).await
        }
    };
    !matches!(
        tokio::time::timeout(Duration::from_millis(200), send).await,
        Ok(Err(_))
    )
}

async fn run(
    hub: Hub,
    id: ConnId,
    uid: FirebaseUid,
    mut session: Session,
    mut stream: AggregatedMessageStream,
    mut rx: tokio::sync::mpsc::Receiver<ByteString>,
    kick: CancellationToken,
) {
    // Copy what the loop needs rather than hold a clone of the settings.
    let (per_connection, ping_interval, idle_timeout) = {
        let s = hub.settings();
        (
            s.per_connection_concurrency.max(1),
            s.ping_interval,
            s.idle_timeout,
        )
    };
    let mut conn = Connection {
        hub: hub.clone(),
        id,
        uid,
        permits: Arc::new(Semaphore::new(per_connection)),
        kick: kick.clone(),
        bad_frames: 0,
    };

    let mut ping = tokio::time::interval(ping_interval);
    ping.tick().await;
    let mut last_seen = Instant::now();
    let close: Option<CloseReason> = loop {
        tokio::select! {
            biased;
            () = kick.cancelled() => {
                break Some(if hub.is_shutting_down() {
                    (CloseCode::Away, "server shutting down").into()
                } else {
                    (CloseCode::Policy, "too slow: outbound queue full").into()
                });
            }
            // Drain the outbound queue. A send waits while the client reads
            // slowly (backpressure), but gives up the moment the hub drops
            // the connection for letting its queue overflow.
            next = rx.recv() => {
                let Some(text) = next else { break None };
                let sent = tokio::select! {
                    r = session.text(text) => r.is_ok(),
                    () = kick.cancelled() => continue,
                };
                if !sent {
                    break None;
                }
            }
            _ = ping.tick() => {
                if last_seen.elapsed() > idle_timeout {
                    break Some((CloseCode::Policy, "idle timeout: no pong").into());
                }
                if !control(&mut session, true, b"").await {
                    break None;
                }
            }
            msg = stream.recv() => match msg {
                None => break None,
                Some(Ok(AggregatedMessage::Text(text))) => {
                    last_seen = Instant::now();
                    conn.on_text(&text).await;
                }
                Some(Ok(AggregatedMessage::Binary(_))) => {
                    last_seen = Instant::now();
                    conn.send_error(&EnvelopeError {
                        code: "binary_not_supported",
                        message: "send JSON envelopes as text frames".into(),
                        id: None,
                    })
                    .await;
                }
                Some(Ok(AggregatedMessage::Ping(p))) => {
                    last_seen = Instant::now();
                    if !control(&mut session, false, &p).await {
                        break None;
                    }
                }
                Some(Ok(AggregatedMessage::Pong(_))) => last_seen = Instant::now(),
                Some(Ok(AggregatedMessage::Close(reason))) => break reason.or(Some(CloseCode::Normal.into())),
                Some(Err(e)) => {
                    tracing::warn!(conn = id, error = %e, "websocket protocol error; closing");
                    break Some(close_for(&e));
                }
            }
        }
    };
    hub.unregister(id);
    kick.cancel();
    let code = close.as_ref().map(|c| u16::from(c.code));
    let _ = tokio::time::timeout(Duration::from_secs(1), session.close(close)).await;
    tracing::info!(conn = id, close_code = ?code, "websocket closed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn tokens_come_from_the_header_the_query_or_the_protocol_list() {
        let r = TestRequest::get()
            .insert_header((header::AUTHORIZATION, "Bearer abc"))
            .to_http_request();
        assert_eq!(token_from(&r).as_deref(), Some("abc"));
        let r = TestRequest::get()
            .uri("/ws?access_token=q.r.s")
            .to_http_request();
        assert_eq!(token_from(&r).as_deref(), Some("q.r.s"));
        let r = TestRequest::get()
            .insert_header((header::SEC_WEBSOCKET_PROTOCOL, "bearer, x.y.z"))
            .to_http_request();
        assert_eq!(token_from(&r).as_deref(), Some("x.y.z"));
        let r = TestRequest::get()
            .insert_header((header::SEC_WEBSOCKET_PROTOCOL, "chat, x.y.z"))
            .to_http_request();
        assert_eq!(token_from(&r), None);
        let r = TestRequest::get()
            .insert_header((header::AUTHORIZATION, "Basic abc"))
            .to_http_request();
        assert_eq!(token_from(&r), None);
        assert_eq!(token_from(&TestRequest::get().to_http_request()), None);
    }
}

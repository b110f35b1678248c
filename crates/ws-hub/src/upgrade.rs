//! `GET /ws`: the authenticated upgrade; what is refused before a socket
//! exists (no or bad token, too many sockets, shutting down) is answered in
//! the API's problem shape.

use crate::connection::{Connected, run};
use crate::hub::Hub;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use ports::{TokenVerifier, VerifyTokenError};
use std::sync::Arc;

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
    // Exactly `bearer`, as the handshake echoes only an exact match and a
    // browser refuses a 101 without the protocol it offered.
    if offered.iter().any(|p| p == BEARER_PROTOCOL) {
        return offered.into_iter().find(|p| p != BEARER_PROTOCOL);
    }
    None
}

/// A refusal before the upgrade, in the API's problem shape.
fn problem(status: StatusCode, code: &'static str, detail: &str) -> HttpResponse {
    let body = ports::Problem::new(
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        code,
        detail,
    );
    HttpResponse::build(status)
        .content_type(ports::PROBLEM_JSON)
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
    if let Some(users) = state.hub.account_tombstones() {
        match users.deleted_at(&identity.uid).await {
            Ok(Some(at)) if identity.issued_before(at) => {
                tracing::info!(uid = %identity.uid, "websocket refused: token issued before the account was deleted");
                return unauthorized();
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "websocket refused: account tombstones unavailable");
                return problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service_unavailable",
                    "Try again shortly.",
                );
            }
        }
    }
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
    let Some((id, rx, kick)) = state.hub.register(identity.uid.clone()) else {
        tracing::info!(uid = %identity.uid, "websocket refused: too many sockets for this user");
        return problem(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            "This account has too many WebSockets open; close one first.",
        );
    };
    tracing::info!(conn = id, uid = %identity.uid, "websocket connected");
    run(
        Connected {
            hub: state.hub.clone(),
            verifier: state.verifier.clone(),
            id,
            uid: identity.uid,
            expires_at: identity.expires_at,
            socket: req.conn_data::<crate::SocketHandle>().cloned(),
        },
        session,
        stream,
        rx,
        kick,
    );
    response
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

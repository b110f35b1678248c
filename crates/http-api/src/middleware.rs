//! The middleware every request passes: request id, span, access log,
//! metrics, and the guarantee that every error body is problem+json.

use crate::problem::{ApiError, PROBLEM_JSON, Problem, ProblemResponse as _};
use crate::rate_limit::CountedPerIp;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use domain::FirebaseUid;
use std::time::Instant;
use tracing::Instrument as _;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of the request being served (from the client when well-formed).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// A client-supplied request id is kept when it is 1 to 128 characters of
/// `[A-Za-z0-9._:-]`; anything else is replaced (it ends up in logs).
fn incoming_request_id(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let ok = (1..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    ok.then(|| v.to_owned())
}

/// The label of a request's method: one of the methods HTTP defines, or
/// `other` (a client may send any token as a method, and every distinct
/// label is a series kept for the process's life).
pub(crate) fn method_label(method: &actix_web::http::Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
    ];
    KNOWN
        .into_iter()
        .find(|m| *m == method.as_str())
        .unwrap_or("other")
}

fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "service_unavailable",
        s if s.is_server_error() => "internal_error",
        _ => "request_failed",
    }
}

fn detail_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "No resource at this path.",
        StatusCode::METHOD_NOT_ALLOWED => "This method is not allowed on this path.",
        StatusCode::BAD_REQUEST => "The request is malformed (check the query string and path).",
        s if s.is_server_error() => "Something went wrong on our side. It has been logged.",
        _ => "The request could not be served.",
    }
}

/// Replaces a non-problem error body (from actix itself: unknown route, wrong
/// method, a query string that does not parse) with problem+json. Actix's own
/// error text can quote input and is never sent. An HTML page (the ops
/// console's own error pages, which never quote input) is kept: actix never
/// answers with HTML by itself.
fn ensure_problem(res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let kept = res.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.starts_with(PROBLEM_JSON.as_bytes()) || v.starts_with(b"text/html")
    });
    if kept {
        return res;
    }
    let mut replacement = Problem::of(status, code_for(status), detail_for(status)).to_response();
    // Keep headers that matter to the client (Allow on a 405, for example).
    for (name, value) in res.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            replacement
                .headers_mut()
                .insert(name.clone(), value.clone());
        }
    }
    res.into_response(replacement)
}

pub(crate) async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let request_id =
        incoming_request_id(req.headers()).unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    req.extensions_mut().insert(RequestId(request_id.clone()));
    // actix takes any method token up to the head limit: only the known
    // ones reach a label or a log line.
    let method = method_label(req.method());
    // Paths can hold secrets (`/push-tokens/{token}`): logged only for
    // requests no route matched, and shortened.
    let path: String = req.path().chars().take(128).collect();
    let span = tracing::info_span!("request", request_id = %request_id, %method);
    let start = Instant::now();

    let res = match next.call(req).instrument(span.clone()).await {
        Ok(res) => res.map_into_boxed_body(),
        Err(e) => {
            // Only CORS fails this way (a preflight asking for a method or
            // header it does not allow): actix renders it as plain text,
            // which only the browser's preflight check ever reads.
            let _entered = span.enter();
            tracing::info!(target: "access", status = e.as_response_error().status_code().as_u16(),
                latency_ms = start.elapsed().as_secs_f64() * 1000.0, error = %e, "request refused");
            return Err(e);
        }
    };
    let mut res = ensure_problem(res);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), v);
    }

    let elapsed = start.elapsed();
    let status = res.status();
    let pattern = res.request().match_pattern();
    if let Some(d) = crate::routes::DEPRECATED
        .iter()
        .find(|d| pattern.as_deref() == Some(d.route) && method == d.method)
    {
        for (name, value) in deprecation_headers(d) {
            if let Ok(v) = HeaderValue::from_str(&value) {
                res.headers_mut().insert(HeaderName::from_static(name), v);
            }
        }
    }
    let route = pattern.clone().unwrap_or_else(|| "unmatched".to_owned());
    let path = if pattern.is_some() {
        "-"
    } else {
        path.as_str()
    };
    let uid = res
        .request()
        .extensions()
        .get::<FirebaseUid>()
        .map(ToString::to_string);
    let _entered = span.enter();
    if let Some(api_error) = res
        .response()
        .error()
        .and_then(|e| e.as_error::<ApiError>())
    {
        match api_error {
            ApiError::Internal(cause) => {
                tracing::error!(error = %format!("{cause:#}"), "request failed")
            }
            ApiError::Unavailable(cause) => {
                tracing::warn!(error = %format!("{cause:#}"), "dependency unavailable")
            }
            ApiError::Unauthorized(reason) => tracing::info!(reason = %reason, "token refused"),
            _ => {}
        }
    }
    tracing::info!(
        target: "access",
        %path,
        %route,
        status = status.as_u16(),
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        uid = uid.as_deref().unwrap_or("-"),
        "request served"
    );
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", status.as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
    Ok(res)
}

/// `Deprecation` (RFC 9745: `@<unix time>`), `Sunset` (RFC 8594: an
/// HTTP date) and a `Link` to the successor.
pub(crate) fn deprecation_headers(d: &crate::routes::Deprecated) -> Vec<(&'static str, String)> {
    let at = |date: &str| {
        chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
    };
    let mut headers = Vec::new();
    if let Some(since) = at(d.since) {
        headers.push(("deprecation", format!("@{}", since.timestamp())));
    }
    if let Some(sunset) = at(d.sunset) {
        headers.push((
            "sunset",
            sunset.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        ));
    }
    headers.push((
        "link",
        format!("<{}>; rel=\"successor-version\"", d.successor),
    ));
    headers
}

/// Routes that are never rate limited (probes and scrapes must always answer).
fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Per-IP limits for everything a user limit does not cover: counted up
/// front for every request except probes and API calls that carry
/// credentials. Those count per user once verified, and per IP when the
/// `Authenticated` extractor refuses them; one that never reached the
/// extractor (an unknown path, a wrong method) is counted per IP on its way
/// out. So a junk `Authorization` header buys no way around the limit.
/// WebSocket upgrades count per IP.
pub(crate) async fn rate_limit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let limiter = req
        .app_data::<actix_web::web::Data<crate::ApiState>>()
        .and_then(|s| s.rate_limiter.clone());
    let Some(limiter) = limiter.filter(|_| !exempt(req.path())) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let per_user =
        req.path().starts_with("/api/") && req.headers().contains_key(header::AUTHORIZATION);
    if !per_user {
        if let Err(e) = limiter.check_ip(req.request()).await {
            return Ok(req.error_response(e).map_into_boxed_body());
        }
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    }
    let res = next.call(req).await?.map_into_boxed_body();
    let counted = {
        let ext = res.request().extensions();
        ext.get::<FirebaseUid>().is_some() || ext.get::<CountedPerIp>().is_some()
    };
    if counted {
        return Ok(res);
    }
    match limiter.check_ip(res.request()).await {
        Ok(()) => Ok(res),
        Err(e) => {
            let (req, _) = res.into_parts();
            Ok(ServiceResponse::from_err(e, req).map_into_boxed_body())
        }
    }
}

/// Headers every response carries unless a handler set its own.
pub(crate) fn security_headers() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "no-referrer"))
        .add((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ))
        .add((
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        ))
        .add((header::CACHE_CONTROL, "no-store"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_methods_become_labels() {
        use actix_web::http::Method;
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        for token in ["FOO", "get", &"X".repeat(20_000)] {
            let m = Method::from_bytes(token.as_bytes()).unwrap();
            assert_eq!(
                method_label(&m),
                "other",
                "{}",
                &token[..token.len().min(10)]
            );
        }
    }

    #[test]
    fn client_request_ids_are_kept_only_when_well_formed() {
        let mut h = HeaderMap::new();
        h.insert(
            HeaderName::from_static(REQUEST_ID_HEADER),
            HeaderValue::from_static("abc-123.x:y_z"),
        );
        assert_eq!(incoming_request_id(&h).as_deref(), Some("abc-123.x:y_z"));
        h.insert(
            HeaderName::from_static(REQUEST_ID_HEADER),
            HeaderValue::from_static("has space"),
        );
        assert_eq!(incoming_request_id(&h), None);
        let long = "a".repeat(129);
        h.insert(
            HeaderName::from_static(REQUEST_ID_HEADER),
            HeaderValue::from_str(&long).unwrap(),
        );
        assert_eq!(incoming_request_id(&h), None);
    }
}

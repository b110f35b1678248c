//! RFC 9457 problem details: the one error shape every route answers with.
//!
//! Every failure becomes an [`ApiError`]; its status, stable `code` and the
//! text clients see are fixed here. Internal causes are carried for the log
//! (the access-log middleware logs them once, with the request id) and never
//! reach a client.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use std::fmt;

pub use ports::problem::{FieldError, PROBLEM_JSON, Problem};

/// The problem shape (shared with the WebSocket upgrade, in `ports`) as
/// actix-web answers.
pub(crate) trait ProblemResponse {
    /// A problem with `status` and its reason phrase.
    fn of(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self;
    /// The response: `status`, `application/problem+json`, this body.
    fn to_response(&self) -> HttpResponse;
}

impl ProblemResponse for Problem {
    fn of(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Problem::new(
            status.as_u16(),
            status.canonical_reason().unwrap_or("Error"),
            code,
            detail,
        )
    }

    fn to_response(&self) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        HttpResponse::build(status)
            .content_type(PROBLEM_JSON)
            .json(self)
    }
}

/// Everything an HTTP handler can fail with.
#[derive(Debug)]
pub enum ApiError {
    /// The body is not JSON, or not JSON of the expected shape. `detail` is
    /// ours (position and category), never the parser's message.
    MalformedBody(String),
    /// A query string or path parameter that does not parse.
    BadRequest {
        code: &'static str,
        detail: String,
    },
    /// No token, or a token that does not verify. The reason is logged.
    Unauthorized(String),
    NotFound {
        code: &'static str,
        detail: &'static str,
    },
    /// The request cannot be done in the resource's present state.
    Conflict {
        code: &'static str,
        detail: String,
    },
    PayloadTooLarge {
        limit: usize,
    },
    UnsupportedMediaType,
    /// Field-level validation failures.
    Validation(Vec<FieldError>),
    RateLimited {
        retry_after_secs: u64,
    },
    /// A dependency is down or timed out; retrying later may work.
    Unavailable(anyhow::Error),
    /// A bug or an unexpected failure. Logged with its cause chain.
    Internal(anyhow::Error),
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Unavailable(e) => write!(f, "dependency unavailable: {e:#}"),
            ApiError::Internal(e) => write!(f, "internal error: {e:#}"),
            ApiError::Unauthorized(reason) => write!(f, "unauthorized: {reason}"),
            other => write!(f, "{}", other.problem().detail),
        }
    }
}

/// Seconds a client should wait after a 503.
pub(crate) const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

impl ApiError {
    pub fn problem(&self) -> Problem {
        match self {
            ApiError::MalformedBody(detail) => Problem::of(
                StatusCode::BAD_REQUEST,
                "invalid_request_body",
                detail.clone(),
            ),
            ApiError::BadRequest { code, detail } => {
                Problem::of(StatusCode::BAD_REQUEST, code, detail.clone())
            }
            ApiError::Unauthorized(_) => Problem::of(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "A valid Firebase ID token is required: send `Authorization: Bearer <token>`.",
            ),
            ApiError::NotFound { code, detail } => {
                Problem::of(StatusCode::NOT_FOUND, code, *detail)
            }
            ApiError::Conflict { code, detail } => {
                Problem::of(StatusCode::CONFLICT, code, detail.clone())
            }
            ApiError::PayloadTooLarge { limit } => Problem::of(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("The request body is larger than {limit} bytes."),
            ),
            ApiError::UnsupportedMediaType => Problem::of(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send the body as `Content-Type: application/json`.",
            ),
            ApiError::Validation(errors) => {
                let mut p = Problem::of(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation_failed",
                    "Some fields are invalid; see `errors`.",
                );
                p.errors = errors.clone();
                p
            }
            ApiError::RateLimited { .. } => Problem::of(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many requests; retry after the time in `Retry-After`.",
            ),
            ApiError::Unavailable(_) => Problem::of(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "A service this request needs is temporarily unavailable; retry shortly.",
            ),
            ApiError::Internal(_) => Problem::of(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Something went wrong on our side. It has been logged.",
            ),
        }
    }

    /// The cause to log, for the variants that have one worth logging.
    pub fn cause(&self) -> Option<&anyhow::Error> {
        match self {
            ApiError::Unavailable(e) | ApiError::Internal(e) => Some(e),
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.problem().status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = self.problem().to_response();
        let headers = res.headers_mut();
        match self {
            ApiError::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, UNAVAILABLE_RETRY_AFTER_SECS.into());
            }
            ApiError::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, (*retry_after_secs).into());
            }
            _ => {}
        }
        res
    }
}

impl paperclip::v2::schema::Apiv2Errors for ApiError {}

/// Converts a garde report into field errors with JSON pointers.
pub(crate) fn field_errors(report: &garde::Report) -> Vec<FieldError> {
    report
        .iter()
        .map(|(path, error)| FieldError {
            pointer: json_pointer(&path.to_string()),
            detail: error.message().to_owned(),
        })
        .collect()
}

/// `items[0].name` -> `/items/0/name` (RFC 6901, with `~` and `/` escaped).
pub(crate) fn json_pointer(path: &str) -> String {
    if path.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    for part in path.split(['.', '[']) {
        let part = part.trim_end_matches(']');
        if part.is_empty() {
            continue;
        }
        out.push('/');
        out.push_str(&part.replace('~', "~0").replace('/', "~1"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_follow_rfc_6901() {
        assert_eq!(json_pointer("display_name"), "/display_name");
        assert_eq!(json_pointer("items[0].name"), "/items/0/name");
        assert_eq!(json_pointer("a/b~c"), "/a~1b~0c");
        assert_eq!(json_pointer(""), "");
    }

    #[test]
    fn internal_errors_never_show_their_cause() {
        let e = ApiError::Internal(anyhow::anyhow!(
            "connection to 10.0.0.5 refused: password=hunter2"
        ));
        let body = serde_json::to_string(&e.problem()).unwrap();
        assert!(!body.contains("hunter2") && !body.contains("10.0.0.5"));
        assert_eq!(e.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn unavailable_says_when_to_retry() {
        let res = ApiError::Unavailable(anyhow::anyhow!("redis down")).error_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers().get(header::RETRY_AFTER).unwrap(), "5");
        assert_eq!(
            res.headers().get(header::CONTENT_TYPE).unwrap(),
            PROBLEM_JSON
        );
    }

    #[test]
    fn unauthorized_carries_the_bearer_challenge() {
        let res = ApiError::Unauthorized("expired".into()).error_response();
        assert_eq!(
            res.headers().get(header::WWW_AUTHENTICATE).unwrap(),
            "Bearer error=\"invalid_token\""
        );
    }
}

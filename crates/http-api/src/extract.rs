//! Extractors: the authenticated caller, and validated JSON bodies.

use crate::problem::{ApiError, field_errors};
use crate::state::ApiState;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::{self, BytesMut};
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use domain::VerifiedIdentity;
use futures_util::StreamExt as _;
use futures_util::future::LocalBoxFuture;
use paperclip::actix::OperationModifier;
use paperclip::v2::models::{DefaultOperationRaw, DefaultSchemaRaw};
use paperclip::v2::schema::Apiv2Schema;
use ports::VerifyTokenError;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

/// The caller, proven by a verified Firebase ID token in
/// `Authorization: Bearer <token>`. Failing that: 401 problem+json with
/// `WWW-Authenticate: Bearer error="invalid_token"`; the reason is logged.
#[derive(Debug, Clone)]
pub struct Authenticated(pub VerifiedIdentity);

/// Takes the token out of an `Authorization` header value.
pub fn bearer_token(value: &str) -> Result<&str, &'static str> {
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or("not a Bearer credential")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("not a Bearer credential");
    }
    let token = token.trim();
    if token.is_empty() {
        return Err("empty bearer token");
    }
    Ok(token)
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<ApiState>>().cloned();
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().map(str::to_owned));
        let req = req.clone();
        Box::pin(async move {
            let state = state
                .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("ApiState is not registered")))?;
            let refused = |reason: &str| ApiError::Unauthorized(reason.to_owned());
            let token = match &header {
                // Counted per IP by the middleware already.
                None => return Err(refused("no Authorization header")),
                Some(Err(_)) => Err(refused("Authorization header is not ASCII")),
                Some(Ok(v)) => bearer_token(v).map_err(refused),
            };
            let outcome = match token {
                Err(e) => e,
                Ok(token) => {
                    let verified = match state.verifier.verify_cached(token) {
                        Some(identity) => Ok(identity),
                        None => {
                            // A token not proven before costs a signature
                            // check: an IP that used up its budget of
                            // failures pays for none.
                            if let Some(limiter) = &state.rate_limiter {
                                limiter.refuse_exhausted_ip(&req).await?;
                            }
                            state.verifier.verify(token).await
                        }
                    };
                    match verified {
                        Ok(identity) => {
                            req.extensions_mut().insert(identity.uid.clone());
                            if let Some(limiter) = &state.rate_limiter {
                                limiter.check_user(identity.uid.as_str()).await?;
                            }
                            // A token issued before its account was deleted
                            // proves nothing: it cannot undo the deletion.
                            return match state.profiles.token_revoked(&identity).await {
                                Ok(false) => Ok(Authenticated(identity)),
                                Ok(true) => {
                                    Err(refused("token issued before the account was deleted"))
                                }
                                Err(usecases::GetProfileError::Unavailable(e)) => {
                                    Err(ApiError::Unavailable(e))
                                }
                                Err(e) => Err(ApiError::Internal(e.into())),
                            };
                        }
                        Err(VerifyTokenError::Invalid(reason)) => refused(&reason.to_string()),
                        Err(VerifyTokenError::Unavailable(e)) => {
                            return Err(ApiError::Unavailable(e));
                        }
                        Err(VerifyTokenError::Unknown(e)) => return Err(ApiError::Internal(e)),
                    }
                }
            };
            // Failed attempts count against the client's IP.
            if let Some(limiter) = &state.rate_limiter {
                limiter.check_ip(&req).await?;
            }
            Err(outcome)
        })
    }
}

impl Apiv2Schema for Authenticated {}
impl OperationModifier for Authenticated {}

/// A request body whose validation is its parsing: garde runs each field's
/// domain parser once (`parse_into`, `required_into`), keeping what parsed
/// in the validation's context, and `parsed` hands the domain values over.
/// So the rules a field obeys are its domain type's, stated once.
pub trait ParseBody: garde::Validate {
    /// What the handler gets.
    type Parsed;

    /// A fresh context for one validation.
    fn context() -> Self::Context;

    /// The values validation parsed; `None` only if a rule that requires a
    /// value let the body through without one (a bug, answered 500).
    fn parsed(self, context: Self::Context) -> Option<Self::Parsed>;
}

/// The slots validation fills, for [`ParseBody::Context`].
pub type Slots<T> = std::cell::RefCell<T>;

/// A garde rule for an optional field: parses it with `parse` (a domain
/// parser, whose error is the field's message) and stores the value with
/// `store`.
pub fn parse_into<T, V, E: std::fmt::Display>(
    parse: impl Fn(&str) -> Result<V, E>,
    store: impl Fn(&mut T, V),
) -> impl FnOnce(&Option<String>, &Slots<T>) -> garde::Result {
    move |value, slots| match value {
        None => Ok(()),
        Some(v) => match parse(v) {
            Ok(parsed) => {
                store(&mut slots.borrow_mut(), parsed);
                Ok(())
            }
            Err(e) => Err(garde::Error::new(e.to_string())),
        },
    }
}

/// Like [`parse_into`], for a field that must be present.
pub fn required_into<T, V, E: std::fmt::Display>(
    parse: impl Fn(&str) -> Result<V, E>,
    store: impl Fn(&mut T, V),
) -> impl FnOnce(&Option<String>, &Slots<T>) -> garde::Result {
    move |value, slots| match value {
        None => Err(garde::Error::new("is required")),
        some => parse_into(parse, store)(some, slots),
    }
}

/// A JSON body, deserialized, then validated and parsed with garde (see
/// [`ParseBody`]); holds the parsed value.
///
/// - not `application/json` (or `+json`): 415
/// - larger than the configured limit: 413 (checked before reading, and while reading)
/// - not JSON, or not the expected shape (including unknown fields): 400
///   `invalid_request_body`, with the position but never the parser's text
/// - fields that fail validation: 422 `validation_failed` with JSON pointers
pub struct ValidJson<T: ParseBody>(pub T::Parsed);

impl<T: ParseBody> std::fmt::Debug for ValidJson<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidJson").finish_non_exhaustive()
    }
}

fn is_json(req: &HttpRequest) -> bool {
    match req.mime_type() {
        Ok(Some(m)) => {
            m.type_() == mime::APPLICATION
                && (m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON))
        }
        _ => false,
    }
}

/// Describes a serde_json failure without echoing its message (which can
/// quote input and names internal types).
fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax => "is not valid JSON",
        Category::Eof => "ends before the JSON value does",
        Category::Data => "does not match the expected fields and types",
        Category::Io => "could not be read",
    };
    if e.line() > 0 {
        format!(
            "The request body {what} (line {}, column {}).",
            e.line(),
            e.column()
        )
    } else {
        format!("The request body {what}.")
    }
}

impl<T> FromRequest for ValidJson<T>
where
    T: DeserializeOwned + ParseBody + 'static,
{
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<web::Data<ApiState>>()
            .map_or(64 * 1024, |s| s.settings.json_limit);
        let json = is_json(req);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if !json {
                return Err(ApiError::UnsupportedMediaType);
            }
            if declared.is_some_and(|n| n > limit) {
                return Err(ApiError::PayloadTooLarge { limit });
            }
            let mut body = BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|_| {
                    ApiError::MalformedBody("The request body could not be read.".into())
                })?;
                if body.len() + chunk.len() > limit {
                    return Err(ApiError::PayloadTooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            if body.is_empty() {
                return Err(ApiError::MalformedBody(
                    "The request body is empty; send a JSON object.".into(),
                ));
            }
            let value: T = serde_json::from_slice(&body)
                .map_err(|e| ApiError::MalformedBody(describe_json_error(&e)))?;
            let context = T::context();
            value
                .validate_with(&context)
                .map_err(|report| ApiError::Validation(field_errors(&report)))?;
            value.parsed(context).map(ValidJson).ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!(
                    "validation passed without a required value"
                ))
            })
        })
    }
}

impl<T: Apiv2Schema + ParseBody> Apiv2Schema for ValidJson<T> {
    fn name() -> Option<String> {
        T::name()
    }

    fn description() -> &'static str {
        T::description()
    }

    fn raw_schema() -> DefaultSchemaRaw {
        T::raw_schema()
    }
}

impl<T: Apiv2Schema + ParseBody> OperationModifier for ValidJson<T> {
    fn update_parameter(op: &mut DefaultOperationRaw) {
        <web::Json<T> as OperationModifier>::update_parameter(op);
    }

    fn update_definitions(map: &mut BTreeMap<String, DefaultSchemaRaw>) {
        <web::Json<T> as OperationModifier>::update_definitions(map);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing_accepts_only_non_empty_bearer_credentials() {
        assert_eq!(bearer_token("Bearer abc"), Ok("abc"));
        assert_eq!(bearer_token("bearer   abc  "), Ok("abc"));
        assert!(bearer_token("Bearer ").is_err());
        assert!(bearer_token("Bearer").is_err());
        assert!(bearer_token("Basic dXNlcjpwYXNz").is_err());
        assert!(bearer_token("").is_err());
    }

    #[test]
    fn json_errors_are_described_without_echoing_input() {
        let e = serde_json::from_str::<serde_json::Value>("{\"secret\": ").unwrap_err();
        let d = describe_json_error(&e);
        assert!(!d.contains("secret"));
        assert!(d.contains("line 1"));
    }
}

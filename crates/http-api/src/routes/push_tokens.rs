//! `/api/v1/push-tokens`: the caller's FCM registration tokens.

use super::me::{parse_field, parses};
use super::{internal, unavailable};
use crate::extract::{Authenticated, ValidJson};
use crate::problem::{ApiError, FieldError};
use crate::state::ApiState;
use chrono::{DateTime, Utc};
use domain::{Platform, PushToken, PushTokenRecord};
use paperclip::actix::{Apiv2Schema, NoContent, api_v2_operation, web};
use ports::{RegisterPushTokenError, UnregisterPushTokenError};
use serde::{Deserialize, Serialize};
use usecases::ListPushTokensError;

/// A device registration.
#[derive(Debug, Deserialize, garde::Validate, Apiv2Schema)]
#[serde(deny_unknown_fields)]
pub struct RegisterPushTokenRequest {
    /// The FCM registration token (1 to 4096 printable ASCII characters).
    #[garde(custom(required_and(PushToken::parse)))]
    pub token: Option<String>,
    /// `ios`, `android` or `web`.
    #[garde(custom(required_and(|p: &str| p.parse::<Platform>())))]
    pub platform: Option<String>,
}

/// Like [`parses`], but the field must be present.
fn required_and<T, E: std::fmt::Display>(
    parse: impl Fn(&str) -> Result<T, E>,
) -> impl FnOnce(&Option<String>, &()) -> garde::Result {
    move |value, ctx| match value {
        None => Err(garde::Error::new("is required")),
        some => parses(parse)(some, ctx),
    }
}

/// A registered device token.
#[derive(Debug, Serialize, Deserialize, Apiv2Schema)]
pub struct PushTokenResponse {
    pub token: String,
    /// `ios`, `android` or `web`.
    pub platform: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

impl From<PushTokenRecord> for PushTokenResponse {
    fn from(r: PushTokenRecord) -> Self {
        Self {
            token: r.token.as_str().to_owned(),
            platform: r.platform.to_string(),
            created_at: r.created_at,
            last_seen_at: r.last_seen_at,
        }
    }
}

/// One page of tokens; pass `next_cursor` as `cursor` for the next page.
#[derive(Debug, Serialize, Deserialize, Apiv2Schema)]
pub struct PushTokenPage {
    pub items: Vec<PushTokenResponse>,
    /// `null` on the last page. Opaque: do not parse or build it.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, Apiv2Schema)]
pub(crate) struct ListQuery {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, clamped to 1..=100 (default 20).
    pub limit: Option<i64>,
}

fn missing(field: &str) -> ApiError {
    ApiError::Validation(vec![FieldError {
        pointer: format!("/{field}"),
        detail: "is required".into(),
    }])
}

/// Register a device token
///
/// Idempotent: registering the same token again refreshes it; a token last
/// registered by another user moves to the caller. Creates the caller's
/// profile (from the token's claims) if this is their first request.
#[api_v2_operation(tags(PushTokens), operation_id = "registerPushToken")]
pub(crate) async fn register(
    state: web::Data<ApiState>,
    caller: Authenticated,
    body: ValidJson<RegisterPushTokenRequest>,
) -> Result<web::Json<PushTokenResponse>, ApiError> {
    let body = body.0;
    let token = parse_field("token", body.token.as_deref(), PushToken::parse)?
        .ok_or_else(|| missing("token"))?;
    let platform = parse_field("platform", body.platform.as_deref(), str::parse::<Platform>)?
        .ok_or_else(|| missing("platform"))?;
    match state
        .push_tokens
        .register(&caller.0, &token, platform)
        .await
    {
        Ok(registered) => Ok(web::Json(registered.record.into())),
        Err(RegisterPushTokenError::Unavailable(e)) => Err(unavailable(e)),
        Err(RegisterPushTokenError::Unknown(e)) => Err(internal(e)),
    }
}

/// Unregister a device token
///
/// 204 when removed; 404 when the token is not registered to the caller.
#[api_v2_operation(tags(PushTokens), operation_id = "unregisterPushToken")]
pub(crate) async fn unregister(
    state: web::Data<ApiState>,
    caller: Authenticated,
    token: web::Path<String>,
) -> Result<NoContent, ApiError> {
    let not_found = ApiError::NotFound {
        code: "push_token_not_found",
        detail: "This token is not registered to you.",
    };
    let Ok(token) = PushToken::parse(&token.into_inner()) else {
        return Err(not_found);
    };
    match state.push_tokens.unregister(&caller.0, &token).await {
        Ok(()) => Ok(NoContent),
        Err(UnregisterPushTokenError::NotFound) => Err(not_found),
        Err(UnregisterPushTokenError::Unavailable(e)) => Err(unavailable(e)),
        Err(UnregisterPushTokenError::Unknown(e)) => Err(internal(e)),
    }
}

/// List my device tokens
///
/// Oldest first, cursor-paginated.
#[api_v2_operation(tags(PushTokens), operation_id = "listPushTokens")]
pub(crate) async fn list(
    state: web::Data<ApiState>,
    caller: Authenticated,
    query: web::Query<ListQuery>,
) -> Result<web::Json<PushTokenPage>, ApiError> {
    let query = query.into_inner();
    match state
        .push_tokens
        .list(&caller.0, query.cursor.as_deref(), query.limit)
        .await
    {
        Ok(page) => Ok(web::Json(PushTokenPage {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        })),
        Err(ListPushTokensError::InvalidCursor) => Err(ApiError::BadRequest {
            code: "invalid_cursor",
            detail: "The cursor is not one this service issued for this list.".into(),
        }),
        Err(ListPushTokensError::Unavailable(e)) => Err(unavailable(e)),
        Err(ListPushTokensError::Unknown(e)) => Err(internal(e)),
    }
}

//! `/api/v1/push-tokens`: the caller's FCM registration tokens.

use super::RouteProblem;
use crate::extract::{Authenticated, ParseBody, Slots, ValidJson, required_into};
use crate::problem::ApiError;
use crate::state::ApiState;
use chrono::{DateTime, Utc};
use domain::{Platform, PushToken, PushTokenRecord};
use paperclip::actix::{Apiv2Schema, NoContent, api_v2_operation, web};
use serde::{Deserialize, Serialize};
use usecases::{ListPushTokensError, RegisterDeviceError, UnregisterDeviceError};

/// A device registration.
#[derive(Debug, Deserialize, garde::Validate, Apiv2Schema)]
#[serde(deny_unknown_fields)]
#[garde(context(Slots<DeviceSlots>))]
pub struct RegisterPushTokenRequest {
    /// The FCM registration token (1 to 4096 printable ASCII characters).
    #[garde(custom(required_into(PushToken::parse, |d: &mut DeviceSlots, v| d.token = Some(v))))]
    pub token: Option<String>,
    /// `ios`, `android` or `web`.
    #[garde(custom(required_into(|p: &str| p.parse::<Platform>(), |d: &mut DeviceSlots, v| d.platform = Some(v))))]
    pub platform: Option<String>,
}

/// What validating a registration parsed.
#[derive(Debug, Default)]
pub struct DeviceSlots {
    token: Option<PushToken>,
    platform: Option<Platform>,
}

impl ParseBody for RegisterPushTokenRequest {
    type Parsed = (PushToken, Platform);

    fn context() -> Slots<DeviceSlots> {
        Slots::default()
    }

    fn parsed(self, context: Slots<DeviceSlots>) -> Option<(PushToken, Platform)> {
        let slots = context.into_inner();
        Some((slots.token?, slots.platform?))
    }
}

impl From<RegisterDeviceError> for ApiError {
    fn from(e: RegisterDeviceError) -> Self {
        match e {
            RegisterDeviceError::AccountDeleted => {
                ApiError::Unauthorized("token issued before the account was deleted".into())
            }
            RegisterDeviceError::Unavailable(e) => ApiError::Unavailable(e),
            RegisterDeviceError::Unknown(e) => ApiError::Internal(e),
        }
    }
}

const TOKEN_NOT_FOUND: ApiError = ApiError::NotFound {
    code: "push_token_not_found",
    detail: "This token is not registered to you.",
};

impl From<UnregisterDeviceError> for ApiError {
    fn from(e: UnregisterDeviceError) -> Self {
        match e {
            UnregisterDeviceError::NotFound => TOKEN_NOT_FOUND,
            UnregisterDeviceError::Unavailable(e) => ApiError::Unavailable(e),
            UnregisterDeviceError::Unknown(e) => ApiError::Internal(e),
        }
    }
}

impl From<ListPushTokensError> for ApiError {
    fn from(e: ListPushTokensError) -> Self {
        match e {
            ListPushTokensError::InvalidCursor => ApiError::BadRequest {
                code: "invalid_cursor",
                detail: "The cursor is not one this service issued for this list.".into(),
            },
            ListPushTokensError::Unavailable(e) => ApiError::Unavailable(e),
            ListPushTokensError::Unknown(e) => ApiError::Internal(e),
        }
    }
}

/// The problems these routes answer beyond the ones every route shares.
pub(crate) const PROBLEMS: &[RouteProblem] = &[
    RouteProblem {
        operation: "unregisterPushToken",
        status: 404,
        description: "Not your token (`push_token_not_found`).",
    },
    RouteProblem {
        operation: "unregisterPushTokenInBody",
        status: 404,
        description: "Not your token (`push_token_not_found`).",
    },
    RouteProblem {
        operation: "listPushTokens",
        status: 400,
        description: "Invalid cursor or query (`invalid_cursor`, `bad_request`).",
    },
];

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
    let (token, platform) = body.0;
    let registered = state
        .push_tokens
        .register(&caller.0, &token, platform)
        .await?;
    Ok(web::Json(registered.record.into()))
}

/// A device token to unregister.
#[derive(Debug, Deserialize, garde::Validate, Apiv2Schema)]
#[serde(deny_unknown_fields)]
#[garde(context(Slots<UnregisterSlots>))]
pub struct UnregisterPushTokenRequest {
    /// The FCM registration token (1 to 4096 printable ASCII characters).
    #[garde(custom(required_into(PushToken::parse, |d: &mut UnregisterSlots, v| d.token = Some(v))))]
    pub token: Option<String>,
}

/// What validating an unregistration parsed.
#[derive(Debug, Default)]
pub struct UnregisterSlots {
    token: Option<PushToken>,
}

impl ParseBody for UnregisterPushTokenRequest {
    type Parsed = PushToken;

    fn context() -> Slots<UnregisterSlots> {
        Slots::default()
    }

    fn parsed(self, context: Slots<UnregisterSlots>) -> Option<PushToken> {
        context.into_inner().token
    }
}

/// Unregister a device token
///
/// The token travels in the body, never in a URL (URLs end up in proxy and
/// CDN logs, and a push token is a credential for the device). 204 when
/// removed; 404 when the token is not registered to the caller.
#[api_v2_operation(tags(PushTokens), operation_id = "unregisterPushTokenInBody")]
pub(crate) async fn unregister_in_body(
    state: web::Data<ApiState>,
    caller: Authenticated,
    body: ValidJson<UnregisterPushTokenRequest>,
) -> Result<NoContent, ApiError> {
    state.push_tokens.unregister(&caller.0, &body.0).await?;
    Ok(NoContent)
}

/// Unregister a device token (deprecated)
///
/// Deprecated: the token is in the URL, where proxies and CDNs log it. Use
/// `POST /api/v1/push-tokens/unregister`; this route answers with
/// `Deprecation` and `Sunset` headers until it is removed.
/// 204 when removed; 404 when the token is not registered to the caller.
#[api_v2_operation(tags(PushTokens), operation_id = "unregisterPushToken")]
pub(crate) async fn unregister(
    state: web::Data<ApiState>,
    caller: Authenticated,
    token: web::Path<String>,
) -> Result<NoContent, ApiError> {
    // A token that does not parse is registered to nobody.
    let token = PushToken::parse(&token.into_inner()).map_err(|_| TOKEN_NOT_FOUND)?;
    state.push_tokens.unregister(&caller.0, &token).await?;
    Ok(NoContent)
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
    let page = state
        .push_tokens
        .list(&caller.0, query.cursor.as_deref(), query.limit)
        .await?;
    Ok(web::Json(PushTokenPage {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

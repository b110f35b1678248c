//! `/api/v1/me`: the caller's own profile.

use super::{Upserted, internal, unavailable};
use crate::extract::{Authenticated, ValidJson};
use crate::problem::{ApiError, FieldError};
use crate::state::ApiState;
use chrono::{DateTime, Utc};
use domain::{DisplayName, Email, PhotoUrl, ProfilePatch, User};
use paperclip::actix::{Apiv2Schema, NoContent, api_v2_operation, web};
use ports::{UpsertOutcome, UpsertProfileError};
use serde::{Deserialize, Serialize};
use usecases::{DeleteAccountError, GetProfileError};
use uuid::Uuid;

/// A profile as clients see it.
#[derive(Debug, Serialize, Deserialize, Apiv2Schema)]
pub struct ProfileResponse {
    /// The user's id (UUID v7).
    pub id: Uuid,
    /// The Firebase Authentication uid.
    pub uid: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub photo_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<User> for ProfileResponse {
    fn from(u: User) -> Self {
        Self {
            id: u.id.as_uuid(),
            uid: u.uid.to_string(),
            email: u.email.map(|e| e.to_string()),
            display_name: u.display_name.map(|n| n.to_string()),
            photo_url: u.photo_url.map(|p| p.to_string()),
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// A partial profile update. Fields left out (or null) keep their value. When
/// the request creates the profile, fields left out are taken from the ID
/// token's claims (`email`, `name`, `picture`).
#[derive(Debug, Default, Deserialize, garde::Validate, Apiv2Schema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProfileRequest {
    /// An e-mail address, at most 254 characters.
    #[garde(custom(parses(Email::parse)))]
    pub email: Option<String>,
    /// 1 to 100 characters after trimming; no control characters.
    #[garde(custom(parses(DisplayName::parse)))]
    pub display_name: Option<String>,
    /// An absolute http(s) URL, at most 2048 characters.
    #[garde(custom(parses(PhotoUrl::parse)))]
    pub photo_url: Option<String>,
}

/// A garde rule that accepts what a domain parser accepts, with its message.
pub(crate) fn parses<T, E: std::fmt::Display>(
    parse: impl Fn(&str) -> Result<T, E>,
) -> impl FnOnce(&Option<String>, &()) -> garde::Result {
    move |value, _| match value {
        Some(v) => parse(v)
            .map(drop)
            .map_err(|e| garde::Error::new(e.to_string())),
        None => Ok(()),
    }
}

/// Parses an optional field that validation already accepted; a failure here
/// would be a validator/parser mismatch, reported as a 422 all the same.
pub(crate) fn parse_field<T, E: std::fmt::Display>(
    field: &str,
    value: Option<&str>,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<Option<T>, ApiError> {
    value
        .map(|v| {
            parse(v).map_err(|e| {
                ApiError::Validation(vec![FieldError {
                    pointer: format!("/{field}"),
                    detail: e.to_string(),
                }])
            })
        })
        .transpose()
}

impl UpdateProfileRequest {
    fn into_patch(self) -> Result<ProfilePatch, ApiError> {
        Ok(ProfilePatch {
            email: parse_field("email", self.email.as_deref(), Email::parse)?,
            display_name: parse_field(
                "display_name",
                self.display_name.as_deref(),
                DisplayName::parse,
            )?,
            photo_url: parse_field("photo_url", self.photo_url.as_deref(), PhotoUrl::parse)?,
        })
    }
}

/// Get my profile
///
/// 404 `profile_not_found` until the profile exists (created by the first
/// `PATCH /api/v1/me` or `POST /api/v1/push-tokens`).
#[api_v2_operation(tags(Profile), operation_id = "getMe")]
pub(crate) async fn get_me(
    state: web::Data<ApiState>,
    caller: Authenticated,
) -> Result<web::Json<ProfileResponse>, ApiError> {
    match state.profiles.get(&caller.0).await {
        Ok(user) => Ok(web::Json(user.into())),
        Err(GetProfileError::NotFound) => Err(ApiError::NotFound {
            code: "profile_not_found",
            detail: "You have no profile yet; PATCH /api/v1/me creates it.",
        }),
        Err(GetProfileError::Unavailable(e)) => Err(unavailable(e)),
        Err(GetProfileError::Unknown(e)) => Err(internal(e)),
    }
}

/// Create or update my profile
///
/// A partial upsert: 201 when it created the profile, 200 otherwise
/// (including when nothing changed).
#[api_v2_operation(tags(Profile), operation_id = "patchMe")]
pub(crate) async fn patch_me(
    state: web::Data<ApiState>,
    caller: Authenticated,
    body: ValidJson<UpdateProfileRequest>,
) -> Result<Upserted<ProfileResponse>, ApiError> {
    let patch = body.0.into_patch()?;
    match state.profiles.upsert(&caller.0, &patch).await {
        Ok(up) => Ok(Upserted {
            created: up.outcome == UpsertOutcome::Created,
            body: up.user.into(),
        }),
        Err(UpsertProfileError::Unavailable(e)) => Err(unavailable(e)),
        Err(UpsertProfileError::Unknown(e)) => Err(internal(e)),
    }
}

/// Delete my account
///
/// Deletes the profile and every push token (204). 404 when there is no
/// profile.
#[api_v2_operation(tags(Profile), operation_id = "deleteMe")]
pub(crate) async fn delete_me(
    state: web::Data<ApiState>,
    caller: Authenticated,
) -> Result<NoContent, ApiError> {
    match state.profiles.delete(&caller.0).await {
        Ok(()) => Ok(NoContent),
        Err(DeleteAccountError::NotFound) => Err(ApiError::NotFound {
            code: "profile_not_found",
            detail: "You have no profile to delete.",
        }),
        Err(DeleteAccountError::Unavailable(e)) => Err(unavailable(e)),
        Err(DeleteAccountError::Unknown(e)) => Err(internal(e)),
    }
}

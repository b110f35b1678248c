//! `/api/v1/me`: the caller's own profile.

use super::{RouteProblem, Upserted};
use crate::extract::{Authenticated, ParseBody, Slots, ValidJson, parse_into};
use crate::problem::ApiError;
use crate::state::ApiState;
use chrono::{DateTime, Utc};
use domain::{DisplayName, Email, PhotoUrl, ProfilePatch, User};
use paperclip::actix::{Apiv2Schema, api_v2_operation, web};
use ports::UpsertOutcome;
use serde::{Deserialize, Serialize};
use usecases::{DeleteAccountError, GetProfileError, UpdateProfileError};
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
#[garde(context(Slots<ProfilePatch>))]
pub struct UpdateProfileRequest {
    /// An e-mail address, at most 254 characters.
    #[garde(custom(parse_into(Email::parse, |p: &mut ProfilePatch, v| p.email = Some(v))))]
    pub email: Option<String>,
    /// 1 to 100 characters after trimming; no control characters.
    #[garde(custom(parse_into(DisplayName::parse, |p: &mut ProfilePatch, v| p.display_name = Some(v))))]
    pub display_name: Option<String>,
    /// An absolute http(s) URL, at most 2048 characters.
    #[garde(custom(parse_into(PhotoUrl::parse, |p: &mut ProfilePatch, v| p.photo_url = Some(v))))]
    pub photo_url: Option<String>,
}

impl ParseBody for UpdateProfileRequest {
    type Parsed = ProfilePatch;

    fn context() -> Slots<ProfilePatch> {
        Slots::default()
    }

    fn parsed(self, context: Slots<ProfilePatch>) -> Option<ProfilePatch> {
        Some(context.into_inner())
    }
}

impl From<GetProfileError> for ApiError {
    fn from(e: GetProfileError) -> Self {
        match e {
            GetProfileError::NotFound => ApiError::NotFound {
                code: "profile_not_found",
                detail: "You have no profile yet; PATCH /api/v1/me creates it.",
            },
            GetProfileError::Unavailable(e) => ApiError::Unavailable(e),
            GetProfileError::Unknown(e) => ApiError::Internal(e),
        }
    }
}

impl From<UpdateProfileError> for ApiError {
    fn from(e: UpdateProfileError) -> Self {
        match e {
            UpdateProfileError::AccountDeleted => {
                ApiError::Unauthorized("token issued before the account was deleted".into())
            }
            UpdateProfileError::Unavailable(e) => ApiError::Unavailable(e),
            UpdateProfileError::Unknown(e) => ApiError::Internal(e),
        }
    }
}

impl From<DeleteAccountError> for ApiError {
    fn from(e: DeleteAccountError) -> Self {
        match e {
            DeleteAccountError::NotFound => ApiError::NotFound {
                code: "profile_not_found",
                detail: "You have no profile to delete.",
            },
            DeleteAccountError::Unavailable(e) => ApiError::Unavailable(e),
            DeleteAccountError::Unknown(e) => ApiError::Internal(e),
        }
    }
}

/// The problems these routes answer beyond the ones every route shares.
pub(crate) const PROBLEMS: &[RouteProblem] = &[
    RouteProblem {
        operation: "getMe",
        status: 404,
        description: "No profile yet (`profile_not_found`).",
    },
    RouteProblem {
        operation: "deleteMe",
        status: 404,
        description: "No profile yet (`profile_not_found`).",
    },
];

/// Get my profile
///
/// 404 `profile_not_found` until the profile exists (created by the first
/// `PATCH /api/v1/me` or `POST /api/v1/push-tokens`).
#[api_v2_operation(tags(Profile), operation_id = "getMe")]
pub(crate) async fn get_me(
    state: web::Data<ApiState>,
    caller: Authenticated,
) -> Result<web::Json<ProfileResponse>, ApiError> {
    let user = state.profiles.get(&caller.0).await?;
    Ok(web::Json(user.into()))
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
    let up = state.profiles.upsert(&caller.0, &body.0).await?;
    Ok(Upserted {
        created: up.outcome == UpsertOutcome::Created,
        body: up.user.into(),
    })
}

/// The deletion was accepted: the profile and push tokens are gone; the
/// rest follows within minutes.
#[derive(Debug, Serialize, Deserialize, Apiv2Schema)]
pub struct AccountDeletionResponse {
    /// Always `accepted`.
    pub status: String,
    /// What happens next, for people.
    pub detail: String,
}

/// Delete my account
///
/// Deletes the profile and every push token at once and answers 202:
/// the rest follows in the background, retried until done: the stored
/// uploads, the account's WebSockets on every instance, its queued jobs
/// and, where the service may, the Firebase Auth account. 404 when there
/// is no profile.
#[api_v2_operation(tags(Profile), operation_id = "deleteMe")]
pub(crate) async fn delete_me(
    state: web::Data<ApiState>,
    caller: Authenticated,
) -> Result<super::Accepted<AccountDeletionResponse>, ApiError> {
    state.profiles.delete(&caller.0).await?;
    Ok(super::Accepted(AccountDeletionResponse {
        status: "accepted".into(),
        detail: "Your profile and devices are deleted. Your uploads, open sessions, pending notifications and sign-in account are being deleted and will be gone within minutes.".into(),
    }))
}

//! `/api/v1/uploads`: presigned uploads to the object store, and
//! `/media/{id}`, the lasting link of an avatar.

use super::RouteProblem;
use super::me::ProfileResponse;
use crate::extract::{Authenticated, ParseBody, Slots, ValidJson, required_into};
use crate::problem::{ApiError, FieldError};
use crate::state::ApiState;
use actix_web::HttpResponse;
use actix_web::http::header;
use chrono::{DateTime, Utc};
use domain::{InvalidUpload, UploadId, UploadPurpose};
use paperclip::actix::{Apiv2Schema, api_v2_operation, web};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use usecases::{CompletedView, StartedUpload, UploadError, UploadView};
use uuid::Uuid;

/// The uploads a list answers at most (newest first).
const LIST_LIMIT: u32 = 100;

/// What the client wants to upload.
#[derive(Debug, Deserialize, garde::Validate, Apiv2Schema)]
#[serde(deny_unknown_fields)]
#[garde(context(Slots<UploadSlots>))]
pub struct CreateUploadRequest {
    /// `avatar` (image/jpeg, image/png, image/webp or image/heic, at most
    /// 5 MiB; completing it sets the profile's `photo_url`) or
    /// `attachment` (those images, application/pdf or text/plain, at most
    /// 20 MiB).
    #[garde(custom(required_into(UploadPurpose::parse, |s: &mut UploadSlots, v| s.purpose = Some(v))))]
    pub purpose: Option<String>,
    /// The file's MIME type; the store accepts only this type.
    #[garde(required, length(min = 1, max = 255))]
    pub content_type: Option<String>,
    /// The file's size in bytes (at least 1, at most the purpose's limit).
    #[garde(required, range(min = 1))]
    pub size: Option<u64>,
}

/// What validating an upload request parsed.
#[derive(Debug, Default)]
pub struct UploadSlots {
    purpose: Option<UploadPurpose>,
}

impl ParseBody for CreateUploadRequest {
    type Parsed = (UploadPurpose, String, u64);

    fn context() -> Slots<UploadSlots> {
        Slots::default()
    }

    fn parsed(self, context: Slots<UploadSlots>) -> Option<Self::Parsed> {
        Some((
            context.into_inner().purpose?,
            self.content_type?,
            self.size?,
        ))
    }
}

/// A presigned upload: POST `fields` and then the file (last, as `file`)
/// as `multipart/form-data` to `url` before `expires_at`, then call
/// `POST /api/v1/uploads/{id}/complete`.
#[derive(Debug, Serialize, Deserialize, Apiv2Schema)]
pub struct CreatedUploadResponse {
    pub id: Uuid,
    /// Always `POST`.
    pub method: String,
    pub url: String,
    /// The form fields to send, in any order, before the file.
    pub fields: BTreeMap<String, String>,
    pub expires_at: DateTime<Utc>,
}

impl From<StartedUpload> for CreatedUploadResponse {
    fn from(s: StartedUpload) -> Self {
        Self {
            id: s.upload.id.0,
            method: "POST".into(),
            url: s.form.url,
            fields: s.form.fields,
            expires_at: s.form.expires_at,
        }
    }
}

/// An upload.
#[derive(Debug, Serialize, Deserialize, Apiv2Schema)]
pub struct UploadResponse {
    pub id: Uuid,
    /// `avatar` or `attachment`.
    pub purpose: String,
    pub content_type: String,
    /// The announced size while pending; the stored size once completed.
    pub size: u64,
    /// `pending`, `completed` or `replaced` (an avatar a newer one
    /// replaced; deleted after a day).
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// A link that reads the file, valid for a few minutes (or lasting,
    /// when the service has a CDN); null until completed.
    pub url: Option<String>,
}

impl From<UploadView> for UploadResponse {
    fn from(v: UploadView) -> Self {
        let u = v.upload;
        Self {
            id: u.id.0,
            purpose: u.purpose.as_str().into(),
            content_type: u.content_type,
            size: u.size,
            status: u.status.as_str().into(),
            created_at: u.created_at,
            completed_at: u.completed_at,
            url: v.url,
        }
    }
}

/// A completed upload; for an avatar, the profile whose `photo_url` it now is.
#[derive(Debug, Serialize, Deserialize, Apiv2Schema)]
pub struct CompletedUploadResponse {
    pub upload: UploadResponse,
    pub profile: Option<ProfileResponse>,
}

impl From<CompletedView> for CompletedUploadResponse {
    fn from(c: CompletedView) -> Self {
        Self {
            upload: c.upload.into(),
            profile: c.profile.map(Into::into),
        }
    }
}

/// The caller's uploads, newest first (at most 100).
#[derive(Debug, Serialize, Deserialize, Apiv2Schema)]
pub struct UploadList {
    pub items: Vec<UploadResponse>,
}

const UPLOAD_NOT_FOUND: ApiError = ApiError::NotFound {
    code: "upload_not_found",
    detail: "No upload of yours has this id.",
};

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::Invalid(e) => {
                let pointer = match e {
                    InvalidUpload::UnknownPurpose => "/purpose",
                    InvalidUpload::ContentType(_) => "/content_type",
                    InvalidUpload::Size(_) => "/size",
                };
                ApiError::Validation(vec![FieldError {
                    pointer: pointer.into(),
                    detail: e.to_string(),
                }])
            }
            UploadError::TooManyPending { max } => ApiError::Conflict {
                code: "too_many_pending_uploads",
                detail: format!(
                    "You have {max} uploads waiting to be completed; complete them or wait for their forms to expire."
                ),
            },
            UploadError::QuotaExceeded {
                max_files,
                max_bytes,
            } => ApiError::Conflict {
                code: "upload_quota_exceeded",
                detail: format!(
                    "Your uploads would pass your quota of {max_files} files and {max_bytes} bytes; delete some first."
                ),
            },
            UploadError::NotFound => UPLOAD_NOT_FOUND,
            UploadError::NotUploaded => ApiError::Conflict {
                code: "upload_not_received",
                detail: "The file has not arrived yet: post the form first.".into(),
            },
            UploadError::Rejected(_) => ApiError::Conflict {
                code: "upload_rejected",
                detail: "The stored file is not of the announced type or size; it was deleted. Start a new upload.".into(),
            },
            UploadError::Unavailable(e) => ApiError::Unavailable(e),
            UploadError::Unknown(e) => ApiError::Internal(e),
        }
    }
}

pub(crate) const PROBLEMS: &[RouteProblem] = &[
    RouteProblem {
        operation: "createUpload",
        status: 409,
        description: "Too many uploads waiting to be completed (`too_many_pending_uploads`), or a file of this size would pass the caller's quota of stored files (`upload_quota_exceeded`).",
    },
    RouteProblem {
        operation: "completeUpload",
        status: 404,
        description: "No upload of yours has this id (`upload_not_found`).",
    },
    RouteProblem {
        operation: "completeUpload",
        status: 409,
        description: "The file has not arrived (`upload_not_received`), is not what was announced and was deleted (`upload_rejected`), or would pass the caller's quota of stored files (`upload_quota_exceeded`; it was not kept).",
    },
];

/// Start an upload
///
/// Answers a presigned form: the client posts it with the file straight to
/// the object store, which enforces the type, the size limit and the
/// expiry. Creates the caller's profile if this is their first request.
#[api_v2_operation(tags(Uploads), operation_id = "createUpload")]
pub(crate) async fn create(
    state: web::Data<ApiState>,
    caller: Authenticated,
    body: ValidJson<CreateUploadRequest>,
) -> Result<super::Created<CreatedUploadResponse>, ApiError> {
    let (purpose, content_type, size) = body.0;
    let started = state
        .uploads
        .start(&caller.0, purpose, &content_type, size)
        .await?;
    Ok(super::Created(started.into()))
}

/// Complete an upload
///
/// Checks that the file arrived as announced. An avatar becomes the
/// profile's `photo_url` (a lasting link; `profile.updated` reaches the
/// user's other devices) and the avatar it replaces is deleted a day
/// later. Completing twice answers the same.
#[api_v2_operation(tags(Uploads), operation_id = "completeUpload")]
pub(crate) async fn complete(
    state: web::Data<ApiState>,
    caller: Authenticated,
    req: actix_web::HttpRequest,
    id: web::Path<Uuid>,
) -> Result<web::Json<CompletedUploadResponse>, ApiError> {
    let media_base = {
        let info = req.connection_info();
        format!("{}://{}/media", info.scheme(), info.host())
    };
    let done = state
        .uploads
        .complete(&caller.0, UploadId(id.into_inner()), &media_base)
        .await?;
    Ok(web::Json(done.into()))
}

/// List my uploads
///
/// Newest first, at most 100, each with a fresh read link once completed.
#[api_v2_operation(tags(Uploads), operation_id = "listUploads")]
pub(crate) async fn list(
    state: web::Data<ApiState>,
    caller: Authenticated,
) -> Result<web::Json<UploadList>, ApiError> {
    let user = match state.profiles.get(&caller.0).await {
        Ok(user) => user,
        Err(usecases::GetProfileError::NotFound) => {
            return Ok(web::Json(UploadList { items: Vec::new() }));
        }
        Err(e) => return Err(e.into()),
    };
    let items = state.uploads.list(user.id, LIST_LIMIT).await?;
    Ok(web::Json(UploadList {
        items: items.into_iter().map(Into::into).collect(),
    }))
}

/// `GET /media/{id}`: an avatar's lasting link (what `photo_url` holds),
/// answered with a redirect to a fresh short-lived read link. Public, like
/// any avatar: the id is random and only avatars are served.
pub(crate) async fn media(
    state: actix_web::web::Data<ApiState>,
    id: actix_web::web::Path<String>,
) -> HttpResponse {
    let not_found = || {
        HttpResponse::NotFound()
            .content_type(crate::problem::PROBLEM_JSON)
            .json(
                ApiError::NotFound {
                    code: "media_not_found",
                    detail: "No such picture.",
                }
                .problem(),
            )
    };
    let Ok(id) = id.parse::<Uuid>() else {
        return not_found();
    };
    match state.uploads.avatar_link(UploadId(id)).await {
        Ok(Some(url)) => {
            // Cached for less than the link lives.
            let max_age = state.uploads.link_ttl().as_secs() / 2;
            HttpResponse::Found()
                .insert_header((header::LOCATION, url))
                .insert_header((header::CACHE_CONTROL, format!("private, max-age={max_age}")))
                .finish()
        }
        Ok(None) => not_found(),
        Err(e) => actix_web::ResponseError::error_response(&ApiError::from(e)),
    }
}

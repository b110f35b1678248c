//! `GET /api/v1/me/export`: everything the service stores about the caller.

use super::RouteProblem;
use super::me::ProfileResponse;
use crate::extract::Authenticated;
use crate::problem::ApiError;
use crate::state::ApiState;
use chrono::{DateTime, Utc};
use paperclip::actix::{Apiv2Schema, api_v2_operation, web};
use serde::{Deserialize, Serialize};
use usecases::{ExportError, UserExport};

/// A registered device. The push token itself is not exported (it is a
/// credential for the device): its fingerprint, as support and logs name it.
#[derive(Debug, Serialize, Deserialize, Apiv2Schema)]
pub struct ExportedDeviceResponse {
    /// The first 12 hex digits of the token's SHA-256.
    pub fingerprint: String,
    /// `ios`, `android` or `web`.
    pub platform: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

/// The welcome mail, as the service remembers it (its address is kept only
/// as a keyed digest, and forgotten after 30 days).
#[derive(Debug, Serialize, Deserialize, Apiv2Schema)]
pub struct WelcomeMailResponse {
    /// When sending it was first claimed.
    pub claimed_at: DateTime<Utc>,
    /// When it went out; null if it did not (yet).
    pub sent_at: Option<DateTime<Utc>>,
}

/// An event the service's event log keeps about the caller. Events carry
/// identifiers only (the personal data stays in the profile).
#[derive(Debug, Serialize, Deserialize, Apiv2Schema)]
pub struct ExportedEventResponse {
    pub id: uuid::Uuid,
    /// e.g. `user.created`, `user.profile_updated`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    /// When it was handed to the event bus; null while it waits.
    pub published_at: Option<DateTime<Utc>>,
    /// The event as stored.
    pub data: serde_json::Value,
}

/// A job the service holds for the caller (a mail or a push waiting to go,
/// or one that failed for good), with its data; a push token in it appears
/// as its fingerprint.
#[derive(Debug, Serialize, Deserialize, Apiv2Schema)]
pub struct ExportedJobResponse {
    pub id: String,
    pub queue: String,
    /// e.g. `email:welcome`, `push:send-device`.
    pub kind: String,
    /// `pending`, `scheduled`, `active`, `retry` or `dead`.
    pub state: String,
    pub data: serde_json::Value,
}

/// Everything stored about the caller, in one document.
#[derive(Debug, Serialize, Deserialize, Apiv2Schema)]
pub struct UserExportResponse {
    /// The profile, as `GET /api/v1/me` answers it.
    pub profile: ProfileResponse,
    /// The address the sign-in provider last vouched for (welcome mail goes
    /// only there); null if none did.
    pub verified_email: Option<String>,
    /// The events about the caller the event log still keeps (7 days).
    pub events: Vec<ExportedEventResponse>,
    /// The caller's jobs the queue holds.
    pub jobs: Vec<ExportedJobResponse>,
    /// Every registered device.
    pub devices: Vec<ExportedDeviceResponse>,
    /// The welcome mail, if one was sent or is being sent.
    pub welcome_mail: Option<WelcomeMailResponse>,
    /// Every upload; completed ones with a read link valid for minutes.
    pub uploads: Vec<super::uploads::UploadResponse>,
    /// What is not kept: push notifications and realtime messages are not
    /// stored once delivered (a user's recent realtime messages live in
    /// Redis for minutes, for reconnecting clients).
    pub not_kept: Vec<String>,
    pub exported_at: DateTime<Utc>,
}

impl From<UserExport> for UserExportResponse {
    fn from(e: UserExport) -> Self {
        Self {
            profile: e.profile.into(),
            verified_email: e.verified_email.map(|v| v.as_str().to_owned()),
            events: e
                .events
                .into_iter()
                .map(|ev| ExportedEventResponse {
                    id: ev.id,
                    event_type: ev.event_type,
                    occurred_at: ev.occurred_at,
                    published_at: ev.published_at,
                    data: ev.data,
                })
                .collect(),
            jobs: e
                .jobs
                .into_iter()
                .map(|j| ExportedJobResponse {
                    id: j.id,
                    queue: j.queue,
                    kind: j.kind,
                    state: j.state,
                    data: j.data,
                })
                .collect(),
            devices: e
                .devices
                .into_iter()
                .map(|d| ExportedDeviceResponse {
                    fingerprint: d.fingerprint,
                    platform: d.platform.to_owned(),
                    created_at: d.created_at,
                    last_seen_at: d.last_seen_at,
                })
                .collect(),
            welcome_mail: e.welcome_mail.map(|w| WelcomeMailResponse {
                claimed_at: w.claimed_at,
                sent_at: w.sent_at,
            }),
            uploads: e.uploads.into_iter().map(Into::into).collect(),
            not_kept: vec![
                "push notification history".to_owned(),
                "realtime message history beyond its few minutes".to_owned(),
            ],
            exported_at: e.exported_at,
        }
    }
}

impl From<ExportError> for ApiError {
    fn from(e: ExportError) -> Self {
        match e {
            ExportError::NotFound => ApiError::NotFound {
                code: "profile_not_found",
                detail: "You have no profile yet, so nothing is stored about you.",
            },
            ExportError::Unavailable(e) => ApiError::Unavailable(e),
            ExportError::Unknown(e) => ApiError::Internal(e),
        }
    }
}

pub(crate) const PROBLEMS: &[RouteProblem] = &[RouteProblem {
    operation: "exportMe",
    status: 404,
    description: "No profile yet (`profile_not_found`): nothing is stored.",
}];

/// Export my data
///
/// Everything the service stores about the caller, as one JSON document:
/// the profile and the verified address, the registered devices (push
/// tokens as fingerprints), the welcome mail record, the uploads (with read
/// links), the events the event log keeps about the caller and the jobs the
/// queue holds for them. 404 `profile_not_found` before the profile exists.
#[api_v2_operation(tags(Profile), operation_id = "exportMe")]
pub(crate) async fn export_me(
    state: web::Data<ApiState>,
    caller: Authenticated,
) -> Result<web::Json<UserExportResponse>, ApiError> {
    let export = state.data.export(&caller.0).await?;
    Ok(web::Json(export.into()))
}

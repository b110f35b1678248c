//! The FCM HTTP v1 sender.

use crate::body::{read_limited, without_url};
use crate::credentials::ServiceAccountKey;
use crate::message::fcm_message;
use crate::oauth::{AccessToken, AccessTokens};
use async_trait::async_trait;
use domain::PushToken;
use ports::{PushMessage, PushSender, SendPushError};
use serde::Deserialize;
use std::time::Duration;

/// Where FCM lives.
pub const FCM_BASE_URL: &str = "https://fcm.googleapis.com";
/// Error answers larger than this are cut (they are a few hundred bytes).
const MAX_ERROR_BYTES: usize = 64 * 1024;
/// A `Retry-After` longer than this is shortened to it.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How to reach FCM.
#[derive(Debug, Clone)]
pub struct FcmSettings {
    /// The Firebase project the messages are sent as.
    pub project_id: String,
    /// [`FCM_BASE_URL`] unless testing.
    pub base_url: String,
    /// The OAuth2 token endpoint; `None` uses the key file's `token_uri`.
    pub token_url: Option<String>,
    /// Per request, connecting included.
    pub request_timeout: Duration,
    /// Access tokens are replaced this long before they expire.
    pub token_refresh_margin: Duration,
    /// After a failed token fetch, sends fail at once ("retry later") for
    /// this long instead of each fetching again.
    pub token_failure_window: Duration,
}

impl FcmSettings {
    pub fn new(project_id: impl Into<String>) -> Self {
        Self {
            project_id: project_id.into(),
            base_url: FCM_BASE_URL.to_owned(),
            token_url: None,
            request_timeout: Duration::from_secs(10),
            token_refresh_margin: Duration::from_secs(300),
            token_failure_window: Duration::from_secs(5),
        }
    }
}

/// Sends through FCM HTTP v1 as a service account.
#[derive(Debug)]
pub struct FcmSender {
    http: reqwest::Client,
    send_url: String,
    project_id: String,
    client_email: String,
    tokens: AccessTokens,
}

impl FcmSender {
    pub fn new(key: &ServiceAccountKey, settings: FcmSettings) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !settings.project_id.is_empty(),
            "no Firebase project id for FCM"
        );
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        let token_url = settings.token_url.unwrap_or_else(|| key.token_uri.clone());
        Ok(Self {
            send_url: format!(
                "{}/v1/projects/{}/messages:send",
                settings.base_url.trim_end_matches('/'),
                settings.project_id
            ),
            tokens: AccessTokens::new(
                http.clone(),
                crate::oauth::FCM_SCOPE,
                key,
                token_url,
                settings.token_refresh_margin,
                settings.token_failure_window,
            )?,
            http,
            project_id: settings.project_id,
            client_email: key.client_email.clone(),
        })
    }

    /// For the startup log: which project, as whom.
    pub fn describe(&self) -> String {
        format!(
            "FCM HTTP v1, project {} as {}",
            self.project_id, self.client_email
        )
    }

    /// For `app doctor`: an OAuth2 access token for the service account
    /// (signed with its key, exchanged at its token endpoint).
    pub async fn check(&self) -> Result<String, String> {
        match self.tokens.get().await {
            Ok(_) => Ok(format!("{}: an access token was issued", self.describe())),
            Err(e) => Err(format!("{}: {e}", self.describe())),
        }
    }

    /// OAuth2 access tokens fetched so far.
    pub fn access_token_fetches(&self) -> u64 {
        self.tokens.fetches()
    }

    async fn post(
        &self,
        access: &AccessToken,
        body: &serde_json::Value,
        token: &PushToken,
    ) -> Result<Answer, SendPushError> {
        let res = self
            .http
            .post(&self.send_url)
            .bearer_auth(&access.bearer)
            .json(body)
            .send()
            .await
            .map_err(|e| SendPushError::Unavailable {
                reason: format!("FCM is unreachable: {}", without_url(&e)),
                retry_after: None,
            })?;
        let status = res.status().as_u16();
        if res.status().is_success() {
            return Ok(Answer::Accepted);
        }
        let retry_after = res
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        let bytes = read_limited(res, MAX_ERROR_BYTES).await.unwrap_or_default();
        let answer = classify(status, &bytes, retry_after);
        if let Answer::Failed(SendPushError::Rejected { code }) = &answer {
            tracing::warn!(
                token = %token.fingerprint(),
                status,
                %code,
                detail = %api_message(&bytes),
                "FCM refused the message"
            );
        }
        Ok(answer)
    }
}

#[async_trait]
impl PushSender for FcmSender {
    async fn send(&self, token: &PushToken, message: &PushMessage) -> Result<(), SendPushError> {
        message.check_size()?;
        let body = fcm_message(token, message);
        let access = self.tokens.get().await?;
        match self.post(&access, &body, token).await? {
            Answer::Accepted => Ok(()),
            Answer::Failed(e) => Err(e),
            Answer::Unauthenticated => {
                // Revoked or expired early: one fresh token (shared by every
                // send that hit this), one more try.
                self.tokens.invalidate(&access);
                let fresh = self.tokens.get().await?;
                match self.post(&fresh, &body, token).await? {
                    Answer::Accepted => Ok(()),
                    Answer::Failed(e) => Err(e),
                    Answer::Unauthenticated => Err(SendPushError::Unavailable {
                        reason: "FCM refused a freshly issued access token".into(),
                        retry_after: None,
                    }),
                }
            }
        }
    }
}

/// What one FCM answer means.
#[derive(Debug)]
enum Answer {
    Accepted,
    /// Our access token was refused (not a third-party auth error).
    Unauthenticated,
    Failed(SendPushError),
}

#[derive(Deserialize, Default)]
struct ApiErrorBody {
    #[serde(default)]
    error: ApiError,
}

#[derive(Deserialize, Default)]
struct ApiError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

#[derive(Deserialize, Default)]
struct ErrorDetail {
    #[serde(rename = "errorCode")]
    error_code: Option<String>,
    #[serde(rename = "fieldViolations", default)]
    field_violations: Vec<FieldViolation>,
}

#[derive(Deserialize, Default)]
struct FieldViolation {
    #[serde(default)]
    field: String,
}

fn api_message(bytes: &[u8]) -> String {
    serde_json::from_slice::<ApiErrorBody>(bytes)
        .map(|b| b.error.message)
        .unwrap_or_default()
}

/// Classifies an FCM error answer as FCM documents its error codes
/// (<https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode>).
fn classify(status: u16, body: &[u8], retry_after: Option<Duration>) -> Answer {
    let err = serde_json::from_slice::<ApiErrorBody>(body)
        .unwrap_or_default()
        .error;
    let fcm_code = err.details.iter().find_map(|d| d.error_code.clone());
    let about_token = err
        .details
        .iter()
        .flat_map(|d| &d.field_violations)
        .any(|v| v.field == "message.token")
        || err.message.contains("registration token");
    let unavailable = |what: &str| {
        Answer::Failed(SendPushError::Unavailable {
            reason: format!("FCM answered {status} {what}"),
            retry_after,
        })
    };
    let rejected = |code: &str| {
        Answer::Failed(SendPushError::Rejected {
            code: code.to_owned(),
        })
    };
    match fcm_code.as_deref() {
        Some("UNREGISTERED") => Answer::Failed(SendPushError::Unregistered),
        Some("INVALID_ARGUMENT") if about_token => Answer::Failed(SendPushError::InvalidToken),
        Some(code @ ("UNAVAILABLE" | "INTERNAL")) => unavailable(code),
        Some(code @ ("QUOTA_EXCEEDED" | "SENDER_ID_MISMATCH" | "THIRD_PARTY_AUTH_ERROR")) => {
            rejected(code)
        }
        Some(code @ "INVALID_ARGUMENT") => rejected(code),
        // No FCM code (or UNSPECIFIED_ERROR): the HTTP status decides.
        _ => match status {
            400 if about_token => Answer::Failed(SendPushError::InvalidToken),
            401 => Answer::Unauthenticated,
            429 => unavailable("RESOURCE_EXHAUSTED"),
            500..=599 => unavailable(if err.status.is_empty() {
                "server error"
            } else {
                &err.status
            }),
            _ if !err.status.is_empty() => rejected(&err.status),
            _ => rejected(&format!("HTTP_{status}")),
        },
    }
}

/// `Retry-After` as seconds or an HTTP date, at most an hour.
fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests;

//! `POST /api/v1/me/test-push`: a test notification to the caller's devices.

use crate::extract::Authenticated;
use crate::problem::ApiError;
use crate::state::ApiState;
use paperclip::actix::{Apiv2Schema, api_v2_operation, web};
use serde::{Deserialize, Serialize};
use usecases::{DeliveryOutcome, DeviceDelivery, SendTestPushError};

/// What happened on one of the caller's devices.
#[derive(Debug, Serialize, Deserialize, Apiv2Schema)]
pub struct TestPushResult {
    /// The device's registration token.
    pub token: String,
    /// `ios`, `android` or `web`.
    pub platform: Option<String>,
    /// `sent`: FCM accepted it. `pruned`: FCM says the token is dead
    /// (unregistered or invalid); it was deleted. `unavailable`: FCM is
    /// down for now; try again later. `rejected`: FCM refused it (see
    /// `code`). `too_large`, `failed`: see the server log.
    pub outcome: String,
    /// FCM's error code, when it gave one (`UNREGISTERED`, `QUOTA_EXCEEDED`, ...).
    pub code: Option<String>,
    /// For `unavailable`: how long FCM asked to wait, in seconds.
    pub retry_after_secs: Option<u64>,
}

impl From<DeviceDelivery> for TestPushResult {
    fn from(d: DeviceDelivery) -> Self {
        Self {
            token: d.token.as_str().to_owned(),
            platform: d.platform.map(|p| p.to_string()),
            outcome: d.outcome.as_str().to_owned(),
            code: d.code,
            retry_after_secs: d.retry_after.map(|r| r.as_secs()),
        }
    }
}

/// The report of a test push.
#[derive(Debug, Serialize, Deserialize, Apiv2Schema)]
pub struct TestPushResponse {
    /// False when the server has no FCM credentials: the messages were
    /// written to its log, not sent (local development).
    pub live: bool,
    /// Devices tried: the caller's 20 most recently seen tokens at most.
    pub devices: u32,
    /// Devices FCM accepted the message for.
    pub sent: u32,
    /// Registered devices not tried because the caller has more than 20.
    pub skipped: u32,
    /// One entry per device tried, most recently seen first.
    pub results: Vec<TestPushResult>,
}

/// Send me a test notification
///
/// Sends a test notification now to each of the caller's registered
/// devices (the 20 most recently seen at most) and reports what happened on
/// each: the first thing to try when wiring push notifications into an
/// app. Tokens FCM reports as dead are deleted. A caller without devices
/// gets an empty report.
#[api_v2_operation(tags(PushTokens), operation_id = "sendTestPush")]
pub(crate) async fn send_test_push(
    state: web::Data<ApiState>,
    caller: Authenticated,
) -> Result<web::Json<TestPushResponse>, ApiError> {
    let report = state.push.send_test(&caller.0).await?;
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let sent = report
        .deliveries
        .iter()
        .filter(|d| d.outcome == DeliveryOutcome::Sent)
        .count();
    Ok(web::Json(TestPushResponse {
        live: state.push.is_live(),
        devices: count(report.deliveries.len()),
        sent: count(sent),
        skipped: count(report.skipped),
        results: report.deliveries.into_iter().map(Into::into).collect(),
    }))
}

impl From<SendTestPushError> for ApiError {
    fn from(e: SendTestPushError) -> Self {
        match e {
            SendTestPushError::Unavailable(e) => ApiError::Unavailable(e),
            SendTestPushError::Unknown(e) => ApiError::Internal(e),
        }
    }
}

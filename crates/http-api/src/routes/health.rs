//! Liveness and readiness.

use crate::problem::{Problem, ProblemResponse as _};
use crate::state::OpsState;
use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use paperclip::actix::{Apiv2Schema, api_v2_operation, web};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Serialize, Apiv2Schema)]
pub(crate) struct HealthResponse {
    /// Always `ok`.
    status: &'static str,
}

#[derive(Debug, Serialize, Apiv2Schema)]
pub(crate) struct ReadyResponse {
    /// `ok` when every dependency answered.
    status: &'static str,
    /// Each dependency and whether it answered (`ok` or `down`).
    checks: BTreeMap<String, String>,
}

/// Liveness
///
/// Answers 200 while the process runs; checks no dependency (a database
/// outage must not make Kubernetes restart every replica).
#[api_v2_operation(tags(Operations), operation_id = "healthz")]
pub(crate) async fn healthz() -> web::Json<HealthResponse> {
    web::Json(HealthResponse { status: "ok" })
}

/// Readiness
///
/// Checks Postgres and Redis concurrently, each with a short timeout, at
/// most once a second: every caller within a second of the last check gets
/// its result. 200 when all answer; 503 problem+json naming the failing
/// dependencies.
#[api_v2_operation(tags(Operations), operation_id = "readyz")]
pub(crate) async fn readyz(state: web::Data<OpsState>) -> HttpResponse {
    if state.is_draining() {
        let mut res = Problem::of(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "Shutting down: this instance takes no new traffic.",
        )
        .to_response();
        res.headers_mut().insert(
            actix_web::http::header::RETRY_AFTER,
            crate::problem::UNAVAILABLE_RETRY_AFTER_SECS.into(),
        );
        return res;
    }
    let report = state.readiness.report().await;
    let checks: BTreeMap<String, String> = report
        .checks
        .iter()
        .map(|(name, ok)| (name.clone(), if *ok { "ok" } else { "down" }.to_owned()))
        .collect();
    let down = report.down();
    if down.is_empty() {
        return HttpResponse::Ok().json(ReadyResponse {
            status: "ok",
            checks,
        });
    }
    let mut problem = Problem::of(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        format!("Not ready: {} unreachable.", down.join(", ")),
    );
    problem.checks = serde_json::to_value(&checks).ok();
    let mut res = problem.to_response();
    res.headers_mut().insert(
        actix_web::http::header::RETRY_AFTER,
        crate::problem::UNAVAILABLE_RETRY_AFTER_SECS.into(),
    );
    res
}

//! The minimum app version (`X-App-Platform`, `X-App-Version`): an app
//! older than its platform's minimum is answered 426 `upgrade_required`
//! (with the minimum and the store URL) on the API and on `/ws`, before
//! the WebSocket upgrade; requests are counted by app version so a team
//! sees when an old version can be cut off.

use crate::problem::{PROBLEM_JSON, Problem, ProblemResponse as _};
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse};
use domain::{AppPlatform, AppVersion, VersionVerdict};
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

pub const APP_PLATFORM_HEADER: &str = "x-app-platform";
pub const APP_VERSION_HEADER: &str = "x-app-version";

/// Distinct `major.minor` labels the metric keeps per process; later ones
/// are counted as `other` (the header is the client's: unbounded labels
/// would let anyone grow the metrics without end).
const MAX_VERSION_LABELS: usize = 100;

/// What the gate applies to: the API and the WebSocket, not probes,
/// docs, metrics or stored objects.
fn gated(path: &str) -> bool {
    path.starts_with("/api/") || path == "/ws"
}

fn version_label(platform: AppPlatform, version: &AppVersion) -> String {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let label = format!("{}.{}", version.major, version.minor);
    let key = format!("{}/{label}", platform.as_str());
    let mut seen = SEEN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if seen.contains(&key) || seen.len() < MAX_VERSION_LABELS && seen.insert(key) {
        label
    } else {
        "other".to_owned()
    }
}

/// The 426 answer: a problem with the minimum version and the store URL.
pub(crate) fn upgrade_required(
    platform: Option<AppPlatform>,
    min: Option<&AppVersion>,
    store_url: Option<&str>,
) -> HttpResponse {
    let detail = match (platform, min) {
        (Some(p), Some(min)) => format!(
            "This version of the {} app is no longer supported: update to {min} or later.",
            p.as_str()
        ),
        _ => "Send X-App-Platform and X-App-Version: this service serves only apps that say which version they are.".to_owned(),
    };
    let problem = Problem::of(StatusCode::UPGRADE_REQUIRED, "upgrade_required", detail);
    let mut body = serde_json::to_value(&problem).unwrap_or_default();
    body["min_version"] = min.map(ToString::to_string).into();
    body["store_url"] = store_url.into();
    HttpResponse::build(StatusCode::UPGRADE_REQUIRED)
        .content_type(PROBLEM_JSON)
        .json(body)
}

/// The middleware: applies `policy` (from the API state) to gated paths.
pub(crate) async fn gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let policy = req
        .app_data::<actix_web::web::Data<crate::ApiState>>()
        .map(|s| s.settings.app_versions.clone());
    let (Some(policy), true) = (policy, gated(req.path())) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let verdict = {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        policy.check(header(APP_PLATFORM_HEADER), header(APP_VERSION_HEADER))
    };
    match verdict {
        VersionVerdict::Allowed(app) => {
            let (platform, version) = app
                .as_ref()
                .map_or(("unknown", "unknown".to_owned()), |(p, v)| {
                    (p.as_str(), version_label(*p, v))
                });
            metrics::counter!("app_requests_total", "platform" => platform, "version" => version)
                .increment(1);
            next.call(req)
                .await
                .map(ServiceResponse::map_into_boxed_body)
        }
        VersionVerdict::UpgradeRequired {
            platform,
            min,
            store_url,
        } => {
            metrics::counter!("app_requests_refused_total", "platform" => platform.map_or("unknown", AppPlatform::as_str)).increment(1);
            let res = upgrade_required(platform, min.as_ref(), store_url.as_deref());
            Ok(req.into_response(res))
        }
        VersionVerdict::Invalid(e) => {
            let res = Problem::of(
                StatusCode::BAD_REQUEST,
                "invalid_app_version",
                e.to_string(),
            )
            .to_response();
            Ok(req.into_response(res))
        }
    }
}

#![doc = include_str!("../README.md")]

mod app_version;
mod extract;
mod middleware;
mod openapi;
mod problem;
mod rate_limit;
mod readiness;
mod routes;
mod state;

pub use app_version::{APP_PLATFORM_HEADER, APP_VERSION_HEADER};
pub use extract::{
    Authenticated, ParseBody, Slots, ValidJson, bearer_token, parse_into, required_into,
};
pub use middleware::{REQUEST_ID_HEADER, RequestId};
pub use openapi::openapi_spec;
pub use problem::{ApiError, FieldError, PROBLEM_JSON, Problem};
pub use rate_limit::{Cidr, RateLimitSettings, RateLimiter};
pub use readiness::{Readiness, ReadinessReport};
pub use routes::export::{ExportedDeviceResponse, UserExportResponse, WelcomeMailResponse};
pub use routes::me::{AccountDeletionResponse, ProfileResponse, UpdateProfileRequest};
pub use routes::push_tokens::{
    PushTokenPage, PushTokenResponse, RegisterPushTokenRequest, UnregisterPushTokenRequest,
    UnregisterSlots,
};
pub use routes::test_push::{TestPushResponse, TestPushResult};
pub use routes::uploads::{
    CompletedUploadResponse, CreateUploadRequest, CreatedUploadResponse, UploadList,
    UploadResponse, UploadSlots,
};
pub use state::{ApiState, HttpSettings, MetricsRenderer, OpsState};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, web};
use paperclip::actix::OpenApiExt as _;

fn cors(origins: &[String]) -> actix_cors::Cors {
    use actix_web::http::{Method, header};
    let mut cors = actix_cors::Cors::default()
        .allowed_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .allowed_header(REQUEST_ID_HEADER)
        .expose_headers([REQUEST_ID_HEADER])
        .max_age(3600)
        // Another origin's request is served without CORS headers (so the
        // browser withholds the answer), not failed: errors stay
        // problem+json and no response is told apart by origin.
        .block_on_origin_mismatch(false);
    for origin in origins {
        cors = if origin == "*" {
            cors.allow_any_origin()
        } else {
            cors.allowed_origin(origin)
        };
    }
    cors
}

/// The whole HTTP application: every route, the middleware, the error shape.
/// `extra` mounts routes other crates own (the WebSocket endpoint); they get
/// the same middleware.
pub fn build_app(
    state: ApiState,
    spec: web::Bytes,
    extra: impl FnOnce(&mut web::ServiceConfig),
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let cors_enabled = !state.settings.cors_origins.is_empty();
    let cors = cors(&state.settings.cors_origins);
    App::new()
        .app_data(web::Data::new(state.ops.clone()))
        .app_data(web::Data::new(state))
        .app_data(web::Data::new(routes::docs::SpecJson(spec)))
        .wrap(actix_web::middleware::from_fn(middleware::rate_limit))
        .wrap(actix_web::middleware::from_fn(app_version::gate))
        .wrap(actix_web::middleware::Condition::new(cors_enabled, cors))
        .wrap(middleware::security_headers())
        .wrap(actix_web::middleware::from_fn(middleware::observe))
        .wrap_api()
        .configure(routes::documented)
        .build()
        .route("/metrics", web::get().to(routes::docs::metrics))
        .route("/openapi.json", web::get().to(routes::docs::openapi_json))
        .route("/docs", web::get().to(routes::docs::docs))
        .route("/docs/init.js", web::get().to(routes::docs::docs_init))
        .route(
            "/docs/assets/{version}/{file}",
            web::get().to(routes::docs::docs_asset),
        )
        .configure(routes::links)
        .configure(extra)
}

/// Only the operational routes (`/healthz`, `/readyz`, `/metrics`) with the
/// same middleware: what a worker process serves.
pub fn build_ops_app(
    ops: OpsState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(web::Data::new(ops))
        .wrap(middleware::security_headers())
        .wrap(actix_web::middleware::from_fn(middleware::observe))
        .wrap_api()
        .configure(routes::operational)
        .build()
        .route("/metrics", web::get().to(routes::docs::metrics))
}

/// Only `/metrics`, for a listener of its own (`METRICS_ADDR`): nothing
/// else is reachable there, and nothing there is rate limited.
pub fn build_metrics_app(
    metrics: Option<MetricsRenderer>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(web::Data::new(routes::docs::MetricsOnly(metrics)))
        .wrap(actix_web::middleware::from_fn(middleware::observe))
        .route("/metrics", web::get().to(routes::docs::metrics_only))
}

/// [`openapi_spec`] serialized once, for [`build_app`].
pub fn openapi_bytes() -> web::Bytes {
    web::Bytes::from(serde_json::to_vec(&openapi_spec()).unwrap_or_default())
}

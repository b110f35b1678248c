//! `/openapi.json`, `/docs` and `/metrics`: routes outside the spec.

use crate::state::OpsState;
use actix_web::http::header;
use actix_web::{HttpResponse, web};

/// Swagger UI, vendored (`assets/swagger-ui-5.36.0`, from the npm package
/// `swagger-ui-dist`, Apache-2.0) and served by the app itself, so the
/// docs work offline and in air-gapped clusters. paperclip's embedded UI
/// is from 2021 (with known CVEs) and is deliberately not used.
/// The vendored version, once: the asset directory, the URLs and the
/// route's check all come from it.
macro_rules! swagger_ui_version {
    () => {
        "5.36.0"
    };
}

pub(crate) const SWAGGER_UI_VERSION: &str = swagger_ui_version!();

/// A vendored file: its bytes, from `assets/swagger-ui-<version>/`.
macro_rules! swagger_ui_file {
    ($name:literal) => {
        include_bytes!(concat!(
            "../../assets/swagger-ui-",
            swagger_ui_version!(),
            "/",
            $name
        ))
    };
}

const DOCS_HTML: &str = concat!(
    r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Trellis API</title>
  <link rel="icon" type="image/png" href="/docs/assets/"#,
    swagger_ui_version!(),
    r#"/favicon-32x32.png">
  <link rel="stylesheet" href="/docs/assets/"#,
    swagger_ui_version!(),
    r#"/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/assets/"#,
    swagger_ui_version!(),
    r#"/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"#
);

const DOCS_INIT_JS: &str = "window.addEventListener('load', function () {\n  window.ui = SwaggerUIBundle({ url: '/openapi.json', dom_id: '#swagger-ui', persistAuthorization: true });\n});\n";

/// Only this origin: the page, its assets and the spec. Swagger UI sets
/// inline styles, and renders schemas' example images as `data:` URLs.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

/// The vendored files, by name.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        swagger_ui_file!("swagger-ui-bundle.js"),
    ),
    (
        "swagger-ui.css",
        "text/css; charset=utf-8",
        swagger_ui_file!("swagger-ui.css"),
    ),
    (
        "favicon-32x32.png",
        "image/png",
        swagger_ui_file!("favicon-32x32.png"),
    ),
];

pub(crate) async fn docs() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, DOCS_CSP))
        .body(DOCS_HTML)
}

pub(crate) async fn docs_init() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(DOCS_INIT_JS)
}

/// `/docs/assets/{version}/{file}`: immutable (the version is in the path).
pub(crate) async fn docs_asset(path: web::Path<(String, String)>) -> HttpResponse {
    let (version, file) = path.into_inner();
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, bytes)) if version == SWAGGER_UI_VERSION => HttpResponse::Ok()
            .content_type(*content_type)
            .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
            .body(web::Bytes::from_static(bytes)),
        _ => HttpResponse::NotFound().finish(),
    }
}

/// The spec, computed once at startup.
#[derive(Debug, Clone)]
pub(crate) struct SpecJson(pub web::Bytes);

pub(crate) async fn openapi_json(spec: web::Data<SpecJson>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(spec.0.clone())
}

pub(crate) async fn metrics(state: web::Data<OpsState>) -> HttpResponse {
    render_metrics(state.metrics.as_ref())
}

/// The renderer of a metrics-only listener.
pub(crate) struct MetricsOnly(pub(crate) Option<crate::MetricsRenderer>);

pub(crate) async fn metrics_only(state: web::Data<MetricsOnly>) -> HttpResponse {
    render_metrics(state.0.as_ref())
}

fn render_metrics(renderer: Option<&crate::MetricsRenderer>) -> HttpResponse {
    match renderer {
        Some(render) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(render()),
        None => HttpResponse::NotFound().finish(),
    }
}

//! `/openapi.json`, `/docs` and `/metrics`: routes outside the spec.

use crate::state::OpsState;
use actix_web::http::header;
use actix_web::{HttpResponse, web};

/// The current Swagger UI 5 from a CDN. paperclip's embedded UI is from 2021
/// (with known CVEs) and is deliberately not used.
const DOCS_HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Trellis API</title>
  <link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js" crossorigin="anonymous"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"#;

const DOCS_INIT_JS: &str = "window.addEventListener('load', function () {\n  window.ui = SwaggerUIBundle({ url: '/openapi.json', dom_id: '#swagger-ui', persistAuthorization: true });\n});\n";

const DOCS_CSP: &str = "default-src 'none'; script-src 'self' https://cdn.jsdelivr.net; \
style-src https://cdn.jsdelivr.net 'unsafe-inline'; img-src 'self' data: https://cdn.jsdelivr.net; \
connect-src 'self'; frame-ancestors 'none'";

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

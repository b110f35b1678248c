//! The OpenAPI 3 document: inferred by paperclip from the handlers, then
//! completed with what paperclip cannot infer (info, bearer security, the
//! problem+json error responses).
//!
//! Longer than 450 lines: the completion of the document is under 430 lines;
//! its tests, which check the document against every route, are beside it.

use crate::routes;
use paperclip::actix::OpenApiExt as _;
use paperclip::v2::models::{DefaultApiRaw, Info};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

const DESCRIPTION: &str = "Trellis: Firebase-authenticated users, profiles and push tokens for \
mobile apps. Every request under `/api/v1` needs `Authorization: Bearer <Firebase ID token>`. \
Every error is `application/problem+json` (RFC 9457) with a stable `code`.";

fn base_spec() -> DefaultApiRaw {
    DefaultApiRaw {
        info: Info {
            title: "Trellis API".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: Some(DESCRIPTION.into()),
            ..Info::default()
        },
        ..DefaultApiRaw::default()
    }
}

/// The OpenAPI 3.0 document of every documented route.
pub fn openapi_spec() -> Value {
    let captured: Arc<Mutex<Option<Value>>> = Arc::default();
    let sink = captured.clone();
    let _app = actix_web::App::new()
        .wrap_api_with_spec(base_spec())
        .configure(routes::documented)
        .with_raw_json_spec_v3(move |app, spec| {
            if let Ok(mut slot) = sink.lock() {
                *slot = Some(spec);
            }
            app
        })
        .build();
    let spec = captured
        .lock()
        .ok()
        .and_then(|mut slot| slot.take())
        .unwrap_or_else(|| json!({}));
    complete(spec)
}

fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }
    })
}

fn problem_schemas() -> Value {
    json!({
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details. Switch on `code`, never on `detail`.",
            "required": ["type", "title", "status", "detail", "code"],
            "properties": {
                "type": { "type": "string", "description": "A URN naming the problem type.", "example": "urn:trellis:problem:validation_failed" },
                "title": { "type": "string", "example": "Unprocessable Entity" },
                "status": { "type": "integer", "example": 422 },
                "detail": { "type": "string", "description": "Human-readable; may change." },
                "code": { "type": "string", "description": "Stable, snake_case.", "example": "validation_failed" },
                "errors": { "type": "array", "description": "422 only: one entry per invalid field.", "items": { "$ref": "#/components/schemas/FieldError" } },
                "checks": { "type": "object", "description": "/readyz only: each dependency and its state.", "additionalProperties": { "type": "string" } }
            }
        },
        "FieldError": {
            "type": "object",
            "required": ["pointer", "detail"],
            "properties": {
                "pointer": { "type": "string", "description": "JSON pointer (RFC 6901) to the field.", "example": "/display_name" },
                "detail": { "type": "string", "example": "must not be empty" }
            }
        }
    })
}

/// Adds security, error responses and shared schemas to paperclip's output.
fn complete(mut spec: Value) -> Value {
    spec["servers"] = json!([{ "url": "/" }]);
    spec["components"]["securitySchemes"]["bearerAuth"] = json!({
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A Firebase ID token (or, in local mode, one from `app dev-token`)."
    });
    if let (Some(schemas), Value::Object(extra)) = (
        spec["components"]["schemas"].as_object_mut(),
        problem_schemas(),
    ) {
        schemas.extend(extra);
    } else {
        spec["components"]["schemas"] = problem_schemas();
    }
    if let Some(schemas) = spec["components"]["schemas"].as_object_mut() {
        for (name, schema) in schemas.iter_mut() {
            refine_schema(name, schema);
        }
    }
    // `/media/{id}` answers a redirect, which paperclip cannot describe.
    spec["paths"]["/media/{id}"] = json!({ "get": {
        "operationId": "getMedia",
        "tags": ["Uploads"],
        "summary": "Read an avatar",
        "description": "An avatar's lasting link (what `photo_url` holds when the service has no CDN): a redirect to a fresh read link valid for minutes. No token needed: avatars are shown to others, and the id is random.",
        "parameters": [{ "name": "id", "in": "path", "required": true,
                         "schema": { "type": "string", "format": "uuid" } }],
        "responses": {
            "302": { "description": "To the picture.",
                     "headers": { "Location": { "schema": { "type": "string", "format": "uri" } } } },
            "404": problem_response("No such avatar (`media_not_found`).")
        }
    }});
    let Some(paths) = spec["paths"].as_object_mut() else {
        return spec;
    };
    for (path, item) in paths.iter_mut() {
        let Some(ops) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in ops.iter_mut() {
            if !matches!(method.as_str(), "get" | "post" | "patch" | "put" | "delete") {
                continue;
            }
            let responses = &mut op["responses"];
            let mut add = |status: &str, description: &str| {
                responses[status] = problem_response(description);
            };
            if path == "/readyz" {
                add(
                    "503",
                    "A dependency is unreachable (`not_ready`; `checks` says which), or the instance is draining after SIGTERM (`shutting_down`).",
                );
                responses["200"] = json!({
                    "description": "Every dependency answered.",
                    "content": { "application/json": { "schema": {
                        "type": "object",
                        "required": ["status", "checks"],
                        "properties": {
                            "status": { "type": "string", "example": "ok" },
                            "checks": { "type": "object", "additionalProperties": { "type": "string" },
                                        "example": { "postgres": "ok", "redis": "ok" } }
                        }
                    } } }
                });
                continue;
            }
            if path == "/healthz" {
                continue;
            }
            add(
                "500",
                "Unexpected failure (`internal_error`); details are logged, never sent.",
            );
            add(
                "503",
                "A dependency is down (`service_unavailable`); see `Retry-After`.",
            );
            if path.starts_with("/api/") {
                op["security"] = json!([{ "bearerAuth": [] }]);
                let mut parameters = op["parameters"].as_array().cloned().unwrap_or_default();
                parameters.extend([
                    json!({ "name": "X-App-Platform", "in": "header", "required": false,
                            "description": "The client app's platform; with `X-App-Version`, checked against the minimum version.",
                            "schema": { "type": "string", "enum": ["ios", "android", "web"] } }),
                    json!({ "name": "X-App-Version", "in": "header", "required": false,
                            "description": "The client app's version (`major.minor.patch`).",
                            "schema": { "type": "string", "pattern": "^[0-9]{1,9}(\\.[0-9]{1,9}){0,2}([-+][0-9A-Za-z.+-]*)?$", "maxLength": 64 } }),
                ]);
                op["parameters"] = json!(parameters);
                let responses = &mut op["responses"];
                responses["426"] = problem_response(
                    "This app version is too old (`upgrade_required`); the body adds `min_version` and `store_url`.",
                );
                if responses.get("400").is_none() {
                    responses["400"] = problem_response(
                        "`X-App-Platform` or `X-App-Version` does not parse (`invalid_app_version`).",
                    );
                }
                let responses = &mut op["responses"];
                responses["401"] =
                    problem_response("Missing or invalid ID token (`unauthorized`).");
                responses["429"] =
                    problem_response("Too many requests (`rate_limited`); see `Retry-After`.");
            }
            let responses = &mut op["responses"];
            if op_has_body(path, method) {
                responses["400"] = problem_response(
                    "Malformed JSON or unknown fields (`invalid_request_body`), or `X-App-Platform`/`X-App-Version` that do not parse (`invalid_app_version`).",
                );
                responses["413"] =
                    problem_response("Body over the size limit (`payload_too_large`).");
                responses["415"] = problem_response("Body is not JSON (`unsupported_media_type`).");
                responses["422"] =
                    problem_response("Invalid fields (`validation_failed`); see `errors`.");
            }
            // The query parameters' rules, as the server reads them.
            if let Some(params) = op["parameters"].as_array_mut() {
                for p in params.iter_mut() {
                    match (p["in"].as_str(), p["name"].as_str()) {
                        (Some("query"), Some("cursor")) => {
                            p["schema"] = json!({
                                "type": "string",
                                "format": "opaque-cursor",
                                "pattern": "^[A-Za-z0-9_-]*\\.[A-Za-z0-9_-]+$",
                                "maxLength": 1024,
                                "description": "Opaque and signed: pass a page's `next_cursor` back unchanged; anything else is 400 `invalid_cursor`."
                            });
                        }
                        (Some("query"), Some("limit")) => {
                            p["schema"]["minimum"] = json!(1);
                            p["schema"]["maximum"] = json!(100);
                        }
                        _ => {}
                    }
                }
            }
            // When to retry, on the answers that say so.
            let retry_after = json!({ "Retry-After": {
                "description": "Seconds to wait before retrying.",
                "schema": { "type": "integer", "minimum": 0 }
            }});
            for status in ["429", "503"] {
                if op["responses"][status].is_object() {
                    op["responses"][status]["headers"] = retry_after.clone();
                }
            }
            let operation = op["operationId"].as_str().unwrap_or_default().to_owned();
            if let Some(d) = routes::DEPRECATED.iter().find(|d| d.operation == operation) {
                op["deprecated"] = json!(true);
                op["x-sunset"] = json!(d.sunset);
                let headers = json!({
                    "Deprecation": { "description": "RFC 9745: when the route was deprecated (`@<unix time>`).", "schema": { "type": "string" } },
                    "Sunset": { "description": "RFC 8594: when the route goes away.", "schema": { "type": "string" } },
                    "Link": { "description": "The successor (`rel=\"successor-version\"`).", "schema": { "type": "string" } }
                });
                if let Some(responses) = op["responses"].as_object_mut() {
                    for (status, response) in responses.iter_mut() {
                        if status.starts_with('2') {
                            response["headers"] = headers.clone();
                        }
                    }
                }
            }
            let responses = &mut op["responses"];
            for p in routes::problems().filter(|p| p.operation == operation) {
                responses[p.status.to_string()] = problem_response(p.description);
            }
        }
    }
    spec
}

/// Each request field's rule, from the domain type whose parser (run by
/// the garde rule of the field) decides it, or the garde rule itself.
const REQUEST_RULES: &[(&str, &str, domain::FieldRule)] = &[
    (
        "UpdateProfileRequest",
        "display_name",
        domain::DisplayName::RULE,
    ),
    ("UpdateProfileRequest", "email", domain::Email::RULE),
    ("UpdateProfileRequest", "photo_url", domain::PhotoUrl::RULE),
    ("RegisterPushTokenRequest", "token", domain::PushToken::RULE),
    (
        "RegisterPushTokenRequest",
        "platform",
        domain::Platform::RULE,
    ),
    (
        "UnregisterPushTokenRequest",
        "token",
        domain::PushToken::RULE,
    ),
    (
        "CreateUploadRequest",
        "purpose",
        domain::UploadPurpose::RULE,
    ),
    (
        "CreateUploadRequest",
        "content_type",
        // garde: length(min = 1, max = 255)
        domain::FieldRule {
            min_length: Some(1),
            max_length: Some(255),
            format: None,
            pattern: None,
            one_of: None,
            minimum: None,
            maximum: None,
        },
    ),
    (
        "CreateUploadRequest",
        "size",
        // garde: range(min = 1)
        domain::FieldRule {
            min_length: None,
            max_length: None,
            format: None,
            pattern: None,
            one_of: None,
            minimum: Some(1),
            maximum: None,
        },
    ),
];

/// What paperclip cannot infer from the types:
/// - responses send every field, `null` when empty: all are `required`, the
///   optional ones `nullable` (strict generated clients reject a `null`
///   the schema does not allow);
/// - a PATCH field may be `null` (meaning "keep");
/// - push-token registration needs both fields, checked by the validator
///   rather than the type;
/// - `platform` is one of three names.
fn refine_schema(name: &str, schema: &mut Value) {
    let response = name.ends_with("Response") || name.ends_with("Page") || name.ends_with("List");
    refine_object(schema, response);
    if name.ends_with("Request") {
        // Every request body refuses unknown fields (`deny_unknown_fields`).
        schema["additionalProperties"] = json!(false);
    }
    for (_, field, rule) in REQUEST_RULES.iter().filter(|(s, _, _)| *s == name) {
        if let (Some(prop), Value::Object(keywords)) = (
            schema["properties"][*field].as_object_mut(),
            rule.keywords(),
        ) {
            prop.extend(keywords);
        }
    }
    match name {
        "RegisterPushTokenRequest" => schema["required"] = json!(["token", "platform"]),
        "CreateUploadRequest" => *schema = upload_request_schema(schema),
        "UnregisterPushTokenRequest" => schema["required"] = json!(["token"]),
        "UpdateProfileRequest" => {
            if let Some(props) = schema["properties"].as_object_mut() {
                for prop in props.values_mut() {
                    prop["nullable"] = json!(true);
                }
            }
        }
        _ => {}
    }
}

/// One variant per purpose, each with its own content types and size
/// limit (from `UploadPurpose::limits`, what `complete` and the store's
/// policy enforce): a request the schema allows is one the server takes.
fn upload_request_schema(generated: &Value) -> Value {
    let variants: Vec<Value> = domain::UploadPurpose::ALL
        .iter()
        .map(|purpose| {
            let limits = purpose.limits();
            let mut properties = generated["properties"].clone();
            properties["purpose"]["enum"] = json!([purpose.as_str()]);
            properties["content_type"]["enum"] = json!(limits.content_types);
            properties["size"]["maximum"] = json!(limits.max_bytes);
            json!({
                "type": "object",
                "title": format!("{} upload", purpose.as_str()),
                "additionalProperties": false,
                "required": ["purpose", "content_type", "size"],
                "properties": properties,
            })
        })
        .collect();
    json!({
        "description": generated["description"],
        "oneOf": variants,
    })
}

fn refine_object(schema: &mut Value, response: bool) {
    let required: Vec<String> = schema["required"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let Some(props) = schema["properties"].as_object_mut() else {
        return;
    };
    let is_upload = props.contains_key("purpose") && props.contains_key("content_type");
    let mut all = Vec::new();
    for (field, prop) in props.iter_mut() {
        all.push(field.clone());
        if field == "platform" && prop["type"] == "string" {
            prop["enum"] = json!(["ios", "android", "web"]);
        }
        if is_upload && response && field == "purpose" {
            prop["enum"] = json!(domain::UploadPurpose::ALL.map(domain::UploadPurpose::as_str));
        }
        if is_upload && response && field == "status" {
            prop["enum"] = json!(["pending", "completed", "replaced"]);
        }
        if response {
            if !required.contains(field) {
                prop["nullable"] = json!(true);
            }
            // Nested objects (inline, as paperclip writes them) are answers too.
            if prop["type"] == "array" && prop["items"]["properties"].is_object() {
                refine_object(&mut prop["items"], true);
            }
            if prop["properties"].is_object() {
                refine_object(prop, true);
            }
        }
    }
    if response {
        all.sort();
        schema["required"] = json!(all);
    }
}

/// Whether the operation takes a JSON body (and so has the body errors).
fn op_has_body(path: &str, method: &str) -> bool {
    matches!(method, "post" | "patch" | "put") && path != "/api/v1/me/test-push"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field a request body validates states its rule, and every
    /// body refuses unknown fields, as the server does.
    #[test]
    fn every_request_field_states_its_rule() {
        let spec = openapi_spec();
        let mut bodies = 0;
        for (path, item) in spec["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let Some(reference) =
                    op["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str()
                else {
                    continue;
                };
                bodies += 1;
                let name = reference.rsplit('/').next().unwrap();
                let schema = &spec["components"]["schemas"][name];
                let variants: Vec<&Value> = match schema["oneOf"].as_array() {
                    Some(variants) => variants.iter().collect(),
                    None => vec![schema],
                };
                for schema in variants {
                    assert_eq!(
                        schema["additionalProperties"], false,
                        "{method} {path}: {name}"
                    );
                    for (field, prop) in schema["properties"].as_object().unwrap() {
                        let stated = [
                            "minLength",
                            "maxLength",
                            "format",
                            "pattern",
                            "enum",
                            "minimum",
                        ]
                        .iter()
                        .any(|k| prop.get(*k).is_some());
                        assert!(stated, "{method} {path}: {name}.{field} states no rule");
                    }
                }
            }
        }
        assert!(bodies >= 4, "request bodies found: {bodies}");
    }

    #[test]
    fn every_api_operation_is_secured_and_documents_its_errors() {
        let spec = openapi_spec();
        assert_eq!(spec["openapi"].as_str().map(|v| &v[..3]), Some("3.0"));
        let paths = spec["paths"].as_object().unwrap();
        for p in [
            "/healthz",
            "/readyz",
            "/api/v1/me",
            "/api/v1/push-tokens",
            "/api/v1/push-tokens/{token}",
            "/api/v1/uploads",
            "/api/v1/uploads/{id}/complete",
            "/api/v1/me/export",
            "/media/{id}",
        ] {
            assert!(paths.contains_key(p), "{p} is missing from the spec");
        }
        for (path, item) in paths.iter().filter(|(p, _)| p.starts_with("/api/")) {
            for (method, op) in item.as_object().unwrap() {
                if !matches!(method.as_str(), "get" | "post" | "patch" | "delete") {
                    continue;
                }
                assert_eq!(
                    op["security"][0]["bearerAuth"],
                    json!([]),
                    "{method} {path}"
                );
                assert!(
                    op["responses"]["401"].is_object(),
                    "{method} {path} lacks 401"
                );
                assert!(op["responses"]["500"]["content"]["application/problem+json"].is_object());
            }
        }
        let patch = &spec["paths"]["/api/v1/me"]["patch"];
        assert!(patch["responses"]["201"].is_object() && patch["responses"]["200"].is_object());
        assert!(patch["responses"]["422"].is_object());
        assert!(spec["components"]["schemas"]["UpdateProfileRequest"].is_object());
        assert!(spec["components"]["schemas"]["Problem"].is_object());
    }

    /// Each field of `body` is in `schema`'s `required` list, and a `null`
    /// one is `nullable`: what a strict generated client checks.
    fn assert_matches(schema: &Value, body: &Value, what: &str) {
        let required = schema["required"].as_array().cloned().unwrap_or_default();
        for (field, value) in body.as_object().unwrap() {
            assert!(
                required.contains(&json!(field)),
                "{what}.{field} is always sent but not required"
            );
            let prop = &schema["properties"][field];
            if value.is_null() {
                assert_eq!(
                    prop["nullable"],
                    json!(true),
                    "{what}.{field} is sent as null"
                );
            }
            if let (Some(items), Some(first)) = (value.as_array(), value.get(0)) {
                assert!(!items.is_empty());
                if prop["items"]["properties"].is_object() {
                    assert_matches(&prop["items"], first, &format!("{what}.{field}[]"));
                }
            }
        }
    }

    #[test]
    fn response_schemas_allow_exactly_what_responses_send() {
        use crate::routes::me::ProfileResponse;
        use crate::routes::push_tokens::PushTokenPage;
        use crate::routes::test_push::{TestPushResponse, TestPushResult};
        let spec = openapi_spec();
        let schemas = &spec["components"]["schemas"];
        let profile = ProfileResponse {
            id: uuid::Uuid::nil(),
            uid: "u".into(),
            email: None,
            display_name: None,
            photo_url: None,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        };
        assert_matches(
            &schemas["ProfileResponse"],
            &serde_json::to_value(profile).unwrap(),
            "ProfileResponse",
        );
        let page = PushTokenPage {
            items: vec![],
            next_cursor: None,
        };
        assert_matches(
            &schemas["PushTokenPage"],
            &serde_json::to_value(page).unwrap(),
            "PushTokenPage",
        );
        let report = TestPushResponse {
            live: true,
            devices: 1,
            sent: 0,
            skipped: 0,
            results: vec![TestPushResult {
                token: "t".into(),
                platform: None,
                outcome: "failed".into(),
                code: None,
                retry_after_secs: None,
            }],
        };
        assert_matches(
            &schemas["TestPushResponse"],
            &serde_json::to_value(report).unwrap(),
            "TestPushResponse",
        );
        let register = &schemas["RegisterPushTokenRequest"];
        assert_eq!(register["required"], json!(["token", "platform"]));
        assert_eq!(
            register["properties"]["platform"]["enum"],
            json!(["ios", "android", "web"])
        );
    }
}

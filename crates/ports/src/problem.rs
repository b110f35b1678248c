//! RFC 9457 problem details: the one error body HTTP clients get, from the
//! API's routes and from the WebSocket upgrade alike. The shape only; each
//! driving adapter turns it into its framework's response.

use serde::Serialize;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One invalid field of a 422 response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// A JSON pointer (RFC 6901) to the field, e.g. `/display_name`.
    pub pointer: String,
    pub detail: String,
}

/// A problem details body.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// `urn:trellis:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's reason phrase, e.g. `Not Found`.
    pub title: String,
    pub status: u16,
    /// Human-readable; may change. Never an internal error's text.
    pub detail: String,
    /// Stable, snake_case; clients switch on this, never on `detail`.
    pub code: &'static str,
    /// 422 only: one entry per invalid field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// `/readyz` only: each dependency and its state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<serde_json::Value>,
}

impl Problem {
    /// A problem with `status` (and its reason phrase `title`), `code` and
    /// `detail`.
    pub fn new(
        status: u16,
        title: impl Into<String>,
        code: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind: format!("urn:trellis:problem:{code}"),
            title: title.into(),
            status,
            detail: detail.into(),
            code,
            errors: Vec::new(),
            checks: None,
        }
    }
}

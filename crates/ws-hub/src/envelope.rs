//! The wire format: `{"type": "...", "id": "optional", "data": ...}` text frames.

use serde::{Deserialize, Serialize};

/// Longest `type` accepted.
pub const MAX_TYPE_LEN: usize = 64;
/// Longest correlation `id` accepted.
pub const MAX_ID_LEN: usize = 128;

/// A message from a client.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Inbound {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
}

/// A message to a client.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outbound<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    /// The topic a message was published to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<&'a str>,
    /// Its place in the topic's history (recoverable topics only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<&'a str>,
    /// The id to acknowledge it with (`ack`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<&'a str>,
    pub data: &'a serde_json::Value,
}

/// Why an inbound frame was refused; sent back as an `error` envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeError {
    /// Stable, snake_case.
    pub code: &'static str,
    pub message: String,
    /// The request's id, when it could be read.
    pub id: Option<String>,
}

/// Parses an inbound text frame.
pub fn parse(text: &str) -> Result<Inbound, EnvelopeError> {
    let env: Inbound = serde_json::from_str(text).map_err(|_| EnvelopeError {
        code: "malformed",
        message:
            "a frame must be a JSON object {\"type\": string, \"id\"?: string, \"data\"?: any}"
                .into(),
        id: None,
    })?;
    let id = env.id.clone().filter(|i| i.len() <= MAX_ID_LEN);
    if env.kind.is_empty() || env.kind.len() > MAX_TYPE_LEN {
        return Err(EnvelopeError {
            code: "malformed",
            message: format!("type must be 1 to {MAX_TYPE_LEN} characters"),
            id,
        });
    }
    if env.id.as_ref().is_some_and(|i| i.len() > MAX_ID_LEN) {
        return Err(EnvelopeError {
            code: "malformed",
            message: format!("id must be at most {MAX_ID_LEN} characters"),
            id: None,
        });
    }
    Ok(env)
}

/// Serializes an outbound envelope.
pub fn render(kind: &str, id: Option<&str>, data: &serde_json::Value) -> String {
    to_text(&Outbound {
        kind,
        id,
        topic: None,
        offset: None,
        epoch: None,
        delivery: None,
        data,
    })
}

fn to_text(out: &Outbound<'_>) -> String {
    serde_json::to_string(out).unwrap_or_else(|_| String::from("{\"type\":\"error\"}"))
}

/// A notification as sent: `{"type", "topic"?, "offset"?, "epoch"?,
/// "delivery"?, "data"}`.
pub fn render_message(
    n: &ports::Notification,
    topic: Option<&str>,
    position: Option<&ports::StreamPosition>,
) -> String {
    to_text(&Outbound {
        kind: &n.kind,
        id: None,
        topic,
        offset: position.map(|p| p.offset),
        epoch: position.map(|p| p.epoch.as_str()),
        delivery: n.delivery.as_deref(),
        data: &n.data,
    })
}

/// The type of error envelopes.
pub const ERROR_TYPE: &str = "error";

/// The `error` envelope for `e`.
pub fn render_error(e: &EnvelopeError) -> String {
    render(
        ERROR_TYPE,
        e.id.as_deref(),
        &serde_json::json!({"code": e.code, "message": e.message}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn envelopes_parse_with_optional_id_and_data() {
        let e = parse(r#"{"type":"echo","id":"1","data":{"x":1}}"#).unwrap();
        assert_eq!((e.kind.as_str(), e.id.as_deref()), ("echo", Some("1")));
        assert_eq!(e.data["x"], 1);
        let e = parse(r#"{"type":"ping"}"#).unwrap();
        assert!(e.id.is_none() && e.data.is_null());
    }

    #[test]
    fn bad_frames_are_errors_with_the_id_when_readable() {
        assert_eq!(parse("not json").unwrap_err().code, "malformed");
        assert_eq!(parse("[1,2]").unwrap_err().code, "malformed");
        assert_eq!(parse(r#"{"id":"7"}"#).unwrap_err().code, "malformed");
        let e = parse(r#"{"type":"","id":"7"}"#).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("7"));
        assert!(parse(&format!(r#"{{"type":"{}"}}"#, "x".repeat(65))).is_err());
    }

    #[test]
    fn rendering_round_trips() {
        let s = render("echo", Some("9"), &serde_json::json!({"a": [1, 2]}));
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "echo", "id": "9", "data": {"a": [1, 2]}})
        );
        let err: serde_json::Value = serde_json::from_str(&render_error(&EnvelopeError {
            code: "unknown_type",
            message: "m".into(),
            id: None,
        }))
        .unwrap();
        assert_eq!(err["data"]["code"], "unknown_type");
        assert!(err.get("id").is_none());
    }

    proptest! {
        #[test]
        fn the_envelope_parser_never_panics(s in ".{0,300}") {
            let _ = parse(&s);
        }

        #[test]
        fn json_shaped_input_never_panics(kind in ".{0,80}", id in proptest::option::of(".{0,200}"), n in any::<i64>()) {
            let frame = serde_json::json!({"type": kind, "id": id, "data": {"n": n}}).to_string();
            if let Ok(e) = parse(&frame) {
                prop_assert!(!e.kind.is_empty() && e.kind.len() <= MAX_TYPE_LEN);
            }
        }
    }
}

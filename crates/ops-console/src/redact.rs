//! What a page never shows: credentials inside job payloads and events.
//!
//! A push token (the `push:send-device` job carries one) addresses a
//! device and is a credential for it; the console shows its fingerprint,
//! as the support page does. Other secrets a payload may carry (a
//! password, an access token) are hidden entirely.

use serde_json::Value;

/// Keys whose value is a push token: shown as its fingerprint.
const PUSH_TOKEN_KEYS: &[&str] = &["token", "push_token", "fcm_token", "device_token"];
/// Keys whose value is hidden entirely.
const SECRET_KEYS: &[&str] = &[
    "password",
    "secret",
    "authorization",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "private_key",
];

/// `value` with every credential replaced, at any depth.
pub(crate) fn redact(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = k.to_ascii_lowercase();
                    let shown = if PUSH_TOKEN_KEYS.contains(&key.as_str()) {
                        redact_token(v)
                    } else if SECRET_KEYS.contains(&key.as_str()) {
                        Value::String("[redacted]".into())
                    } else {
                        redact(v)
                    };
                    (k.clone(), shown)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

fn redact_token(v: &Value) -> Value {
    match v.as_str() {
        Some(token) => Value::String(match domain::PushToken::parse(token) {
            Ok(t) => format!("[push token {}]", t.fingerprint()),
            Err(_) => "[redacted]".to_owned(),
        }),
        None if v.is_null() => Value::Null,
        None => Value::String("[redacted]".into()),
    }
}

/// A payload as the pages show it: redacted, pretty-printed.
pub(crate) fn shown(value: &Value) -> String {
    serde_json::to_string_pretty(&redact(value)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn push_tokens_become_fingerprints_and_secrets_vanish_at_any_depth() {
        let token = "fcm-token-0123456789abcdefghijklmnopqrstuvwxyz";
        let fingerprint = domain::PushToken::parse(token).unwrap().fingerprint();
        let payload = json!({
            "uid": "u1",
            "token": token,
            "message": {"title": "Hi", "data": {"Password": "hunter2"}},
            "devices": [{"push_token": token}],
        });
        let text = shown(&payload);
        assert!(!text.contains(token), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains(&fingerprint), "{text}");
        assert_eq!(redact(&payload)["uid"], "u1");
        assert_eq!(redact(&payload)["message"]["title"], "Hi");
    }
}

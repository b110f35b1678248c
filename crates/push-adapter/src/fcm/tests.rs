use super::*;

fn body(status: &str, code: Option<&str>, message: &str) -> Vec<u8> {
    let details: Vec<serde_json::Value> = code
        .map(|c| serde_json::json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": c}))
        .into_iter()
        .collect();
    serde_json::json!({"error": {"code": 0, "message": message, "status": status, "details": details}})
        .to_string()
        .into_bytes()
}

fn outcome(a: Answer) -> String {
    match a {
        Answer::Accepted => "accepted".into(),
        Answer::Unauthenticated => "unauthenticated".into(),
        Answer::Failed(SendPushError::Unregistered) => "unregistered".into(),
        Answer::Failed(SendPushError::InvalidToken) => "invalid_token".into(),
        Answer::Failed(SendPushError::Unavailable { retry_after, .. }) => {
            format!("unavailable {retry_after:?}")
        }
        Answer::Failed(SendPushError::Rejected { code }) => format!("rejected {code}"),
        Answer::Failed(e) => format!("other {e}"),
    }
}

#[test]
fn every_documented_error_code_is_classified() {
    let ra = Some(Duration::from_secs(9));
    let cases: &[(u16, Vec<u8>, &str)] = &[
        (
            404,
            body("NOT_FOUND", Some("UNREGISTERED"), "x"),
            "unregistered",
        ),
        (
            400,
            body(
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                "The registration token is not a valid FCM registration token",
            ),
            "invalid_token",
        ),
        (
            400,
            body(
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                "Invalid value at 'message.data[0].value'",
            ),
            "rejected INVALID_ARGUMENT",
        ),
        (
            503,
            body("UNAVAILABLE", Some("UNAVAILABLE"), "x"),
            "unavailable Some(9s)",
        ),
        (
            500,
            body("INTERNAL", Some("INTERNAL"), "x"),
            "unavailable Some(9s)",
        ),
        (
            429,
            body("RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED"), "x"),
            "rejected QUOTA_EXCEEDED",
        ),
        (
            429,
            body("RESOURCE_EXHAUSTED", None, "x"),
            "unavailable Some(9s)",
        ),
        (
            403,
            body("PERMISSION_DENIED", Some("SENDER_ID_MISMATCH"), "x"),
            "rejected SENDER_ID_MISMATCH",
        ),
        (
            401,
            body("UNAUTHENTICATED", Some("THIRD_PARTY_AUTH_ERROR"), "x"),
            "rejected THIRD_PARTY_AUTH_ERROR",
        ),
        (401, body("UNAUTHENTICATED", None, "x"), "unauthenticated"),
        // A 404 without UNREGISTERED (a wrong project) must not prune tokens.
        (404, body("NOT_FOUND", None, "x"), "rejected NOT_FOUND"),
        (
            403,
            body("PERMISSION_DENIED", None, "x"),
            "rejected PERMISSION_DENIED",
        ),
        (
            502,
            b"<html>bad gateway</html>".to_vec(),
            "unavailable Some(9s)",
        ),
        (418, Vec::new(), "rejected HTTP_418"),
    ];
    for (status, b, want) in cases {
        assert_eq!(
            outcome(classify(*status, b, ra)),
            *want,
            "{status} {}",
            String::from_utf8_lossy(b)
        );
    }
}

#[test]
fn retry_after_takes_seconds_or_a_date_and_is_capped() {
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-24T10:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
    assert_eq!(
        parse_retry_after("Tue, 24 Nov 2026 10:00:30 GMT", now),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        parse_retry_after("Tue, 24 Nov 2026 09:00:00 GMT", now),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after("999999", now), Some(MAX_RETRY_AFTER));
    assert_eq!(parse_retry_after("soon", now), None);
}

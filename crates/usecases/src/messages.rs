//! The realtime messages the use cases send: their kinds, and their
//! documents for the AsyncAPI catalogue.

/// The realtime message a user's sockets get when their profile changes.
pub const PROFILE_UPDATED: &str = "profile.updated";

/// The realtime messages the use cases send, for the AsyncAPI catalogue.
pub fn realtime_messages() -> Vec<ports::MessageDoc> {
    let nullable = |format: Option<&str>| match format {
        Some(f) => serde_json::json!({"type": ["string", "null"], "format": f}),
        None => serde_json::json!({"type": ["string", "null"]}),
    };
    vec![ports::MessageDoc {
        kind: PROFILE_UPDATED,
        direction: ports::Direction::ToClient,
        summary: "The user's profile changed (sent to their own topic, `user:<uid>`, which keeps history).",
        data: serde_json::json!({
            "type": "object",
            "required": ["id", "uid", "email", "display_name", "photo_url", "created_at", "updated_at"],
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "uid": {"type": "string"},
                "email": nullable(Some("email")),
                "display_name": nullable(None),
                "photo_url": nullable(Some("uri")),
                "created_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"},
            },
            "additionalProperties": false,
        }),
        on_topic: true,
    }]
}

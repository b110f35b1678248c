//! The envelope catalogue: every message type the hub itself sends or
//! handles, and the AsyncAPI 3 document made of it and the application's
//! own (`asyncapi`), checked in as `openapi/asyncapi.json`.

use ports::{Direction, MessageDoc};
use serde_json::{Map, Value, json};

/// Every `code` an `error` envelope may carry.
pub const ERROR_CODES: &[&str] = &[
    "malformed",
    "binary_not_supported",
    "unknown_type",
    "invalid_data",
    "invalid_token",
    "token_mismatch",
    "unavailable",
    "forbidden_topic",
    "too_many_topics",
    "presence_off",
    "publish_forbidden",
    "internal_error",
];

fn topic() -> Value {
    json!({"type": "string", "pattern": "^[a-z][a-z0-9_-]*:[A-Za-z0-9_.:-]{1,100}$"})
}

fn position_fields() -> Value {
    json!({"offset": {"type": "integer", "minimum": 0}, "epoch": {"type": "string"}})
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "properties": properties, "additionalProperties": false})
}

fn doc(kind: &'static str, direction: Direction, summary: &'static str, data: Value) -> MessageDoc {
    MessageDoc {
        kind,
        direction,
        summary,
        data,
        on_topic: false,
    }
}

/// The hub's own message types.
pub fn builtin_messages() -> Vec<MessageDoc> {
    use Direction::{FromClient, ToClient};
    let mut since = position_fields();
    since["offset"] = json!({"type": "integer", "minimum": 0});
    let since = json!({"type": "object", "required": ["offset", "epoch"], "properties": since, "additionalProperties": false});
    let with_position = |mut props: Value| {
        if let (Some(p), Some(extra)) = (props.as_object_mut(), position_fields().as_object()) {
            p.extend(extra.clone());
        }
        props
    };
    let presence_notice = object(
        &["client", "uid"],
        json!({"client": {"type": "string"}, "uid": {"type": "string"}}),
    );
    let mut publication = doc(
        "publication",
        ToClient,
        "A client's publication on a topic it is subscribed to.",
        object(
            &["uid", "data"],
            json!({"uid": {"type": "string"}, "data": {}}),
        ),
    );
    publication.on_topic = true;
    let mut join = doc(
        "join",
        ToClient,
        "Someone subscribed to the topic (namespaces with join/leave).",
        presence_notice.clone(),
    );
    join.on_topic = true;
    let mut leave = doc(
        "leave",
        ToClient,
        "Someone left the topic (namespaces with join/leave).",
        presence_notice,
    );
    leave.on_topic = true;
    vec![
        doc(
            "echo",
            FromClient,
            "Asks for the same data back (a round trip test).",
            json!({}),
        ),
        doc(
            "subscribe",
            FromClient,
            "Joins a topic; with `since`, first gets what was missed after that position.",
            object(&["topic"], json!({"topic": topic(), "since": since})),
        ),
        doc(
            "unsubscribe",
            FromClient,
            "Leaves a topic.",
            object(&["topic"], json!({"topic": topic()})),
        ),
        doc(
            "presence",
            FromClient,
            "Asks who is subscribed to a topic (namespaces with presence).",
            object(&["topic"], json!({"topic": topic()})),
        ),
        doc(
            "publish",
            FromClient,
            "Publishes to a topic (namespaces that allow client publishing).",
            object(&["topic"], json!({"topic": topic(), "data": {}})),
        ),
        doc(
            "ack",
            FromClient,
            "Acknowledges a message that carried a `delivery` id (it is then not pushed).",
            object(
                &["delivery"],
                json!({"delivery": {"type": "string", "minLength": 1, "maxLength": 128}}),
            ),
        ),
        doc(
            crate::REFRESH_TYPE,
            FromClient,
            "Hands the socket a fresh ID token for the same user.",
            object(&["token"], json!({"token": {"type": "string"}})),
        ),
        doc(
            "echo",
            ToClient,
            "The data of an `echo` request.",
            json!({}),
        ),
        doc(
            "subscribed",
            ToClient,
            "A subscription is live. On a recoverable topic: its position, and whether what was missed follows.",
            object(
                &["topic"],
                with_position(json!({"topic": topic(), "recovered": {"type": "boolean"}})),
            ),
        ),
        doc(
            "unsubscribed",
            ToClient,
            "A subscription ended: asked for, or (`reason: insufficient_state`) messages were lost; subscribe again with `since`.",
            object(
                &["topic"],
                json!({"topic": topic(), "reason": {"enum": [crate::INSUFFICIENT_STATE]}}),
            ),
        ),
        doc(
            "presence",
            ToClient,
            "Who is subscribed to the topic now, on every instance.",
            object(
                &["topic", "clients"],
                json!({"topic": topic(), "clients": {"type": "array", "items": object(&["client", "uid"], json!({"client": {"type": "string"}, "uid": {"type": "string"}}))}}),
            ),
        ),
        doc(
            "published",
            ToClient,
            "A publication was accepted (with its position on a recoverable topic).",
            object(&["topic"], with_position(json!({"topic": topic()}))),
        ),
        publication,
        join,
        leave,
        doc(
            crate::envelope::ERROR_TYPE,
            ToClient,
            "A request failed, or a frame could not be taken; the connection stays open.",
            object(
                &["code", "message"],
                json!({"code": {"enum": ERROR_CODES}, "message": {"type": "string"}}),
            ),
        ),
        doc(
            "refreshed",
            ToClient,
            "The socket's token was replaced; it now expires then.",
            object(
                &["expires_at"],
                json!({"expires_at": {"type": ["string", "null"], "format": "date-time"}}),
            ),
        ),
        doc(
            crate::TOKEN_EXPIRING_TYPE,
            ToClient,
            "The socket's token expires within a minute: send `refresh`.",
            object(
                &["expires_at"],
                json!({"expires_at": {"type": ["string", "null"], "format": "date-time"}}),
            ),
        ),
        doc(
            crate::DISCONNECT_TYPE,
            ToClient,
            "The server is about to close the socket on purpose, with this close code.",
            object(
                &["code", "reason"],
                json!({"code": {"type": "integer"}, "reason": {"type": "string"}}),
            ),
        ),
    ]
}

/// The component key of a message: `client.<type>` or `server.<type>`.
pub fn message_key(m: &MessageDoc) -> String {
    match m.direction {
        Direction::FromClient => format!("client.{}", m.kind),
        Direction::ToClient => format!("server.{}", m.kind),
    }
}

/// The JSON Schema of a whole envelope of `m`.
pub fn envelope_schema(m: &MessageDoc) -> Value {
    let mut properties = json!({
        "type": {"const": m.kind},
        "id": {"type": "string", "maxLength": crate::envelope::MAX_ID_LEN, "description": "The request's correlation id, echoed on its reply."},
        "data": m.data,
    });
    if m.on_topic {
        let extra = json!({
            "topic": topic(),
            "offset": {"type": "integer", "minimum": 1, "description": "Its place in the topic's history (recoverable topics)."},
            "epoch": {"type": "string", "description": "The history's epoch: offsets compare only within one."},
            "delivery": {"type": "string", "description": "Acknowledge with `ack` to stop it going out as a push."},
        });
        if let (Some(p), Some(extra)) = (properties.as_object_mut(), extra.as_object()) {
            p.extend(extra.clone());
        }
    }
    json!({
        "type": "object",
        "required": ["type"],
        "properties": properties,
        "additionalProperties": false,
    })
}

/// The AsyncAPI 3.0 document of `/ws`: the hub's messages and `extra` (the
/// application's notifications).
pub fn asyncapi(extra: &[MessageDoc]) -> Value {
    let mut messages = builtin_messages();
    messages.extend(extra.iter().cloned());
    let mut components = Map::new();
    let mut channel_messages = Map::new();
    let mut operations = Map::new();
    for m in &messages {
        let key = message_key(m);
        components.insert(
            key.clone(),
            json!({
                "name": m.kind,
                "title": m.kind,
                "summary": m.summary,
                "contentType": "application/json",
                "payload": envelope_schema(m),
            }),
        );
        channel_messages.insert(
            key.clone(),
            json!({"$ref": format!("#/components/messages/{key}")}),
        );
        let (action, verb) = match m.direction {
            Direction::FromClient => ("receive", "receive"),
            Direction::ToClient => ("send", "send"),
        };
        operations.insert(
            format!("{verb}.{key}"),
            json!({
                "action": action,
                "channel": {"$ref": "#/channels/ws"},
                "messages": [{"$ref": format!("#/channels/ws/messages/{key}")}],
            }),
        );
    }
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Trellis realtime",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "JSON envelopes over one WebSocket, `GET /ws`: `{\"type\", \"id\"?, \"data\"}` each way. See docs/realtime-clients.md for reconnecting, recovering with `since` and acknowledging.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "localhost:8080",
                "protocol": "ws",
                "description": "A local `app all`; use wss:// behind TLS.",
                "security": [{"$ref": "#/components/securitySchemes/firebaseIdToken"}],
            }
        },
        "channels": {
            "ws": {
                "address": "/ws",
                "title": "The realtime socket",
                "description": "Authenticate with `Authorization: Bearer <Firebase ID token>`, the subprotocols `bearer, <token>`, or `?access_token=<token>`.",
                "messages": channel_messages,
            }
        },
        "operations": operations,
        "components": {
            "messages": components,
            "securitySchemes": {
                "firebaseIdToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "A Firebase ID token (or a local dev token)."},
            },
        },
    })
}

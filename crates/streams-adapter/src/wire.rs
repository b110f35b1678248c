//! The versioned JSON an event travels as on a stream (field `event`).

use chrono::{DateTime, Utc};
use domain::{EventEnvelope, RawEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The stream field holding the JSON.
pub(crate) const EVENT_FIELD: &str = "event";
/// The stream field holding the type, for tools that read streams by hand.
pub(crate) const TYPE_FIELD: &str = "type";

/// Version 1. Consumers accept `v <= 1`; a new version adds optional fields
/// or gets a new number.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct EventWire {
    pub v: u16,
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub data: serde_json::Value,
}

pub(crate) const WIRE_VERSION: u16 = 1;

pub(crate) fn encode(event: &RawEvent) -> String {
    let wire = EventWire {
        v: WIRE_VERSION,
        id: event.id,
        event_type: event.event_type.clone(),
        occurred_at: event.occurred_at,
        data: event.payload.clone(),
    };
    serde_json::to_string(&wire).unwrap_or_default()
}

/// Why an entry did not become an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Undecodable {
    /// Written by a newer version (a type or wire version this consumer
    /// does not know): left for a consumer that knows it.
    Newer(String),
    /// Not an event at all, or a known type whose payload does not fit:
    /// no version can handle it (dead-lettered at once).
    Invalid(String),
}

pub(crate) fn decode(json: &str) -> Result<EventEnvelope, Undecodable> {
    let wire: EventWire = serde_json::from_str(json)
        .map_err(|e| Undecodable::Invalid(format!("not an event: {e}")))?;
    if wire.v > WIRE_VERSION {
        return Err(Undecodable::Newer(format!(
            "wire version {} is newer than this consumer ({WIRE_VERSION})",
            wire.v
        )));
    }
    let raw = RawEvent {
        id: wire.id,
        occurred_at: wire.occurred_at,
        topic: String::new(),
        event_type: wire.event_type,
        payload: wire.data,
    };
    raw.decode().map_err(|e| {
        if e.is_unknown_type() {
            Undecodable::Newer(format!(
                "event type {:?} is unknown to this consumer (written by a newer version?)",
                e.event_type
            ))
        } else {
            Undecodable::Invalid(e.to_string())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{DomainEvent, FirebaseUid, UserCreated, UserId};

    #[test]
    fn events_round_trip_and_garbage_is_an_error() {
        let e = EventEnvelope::new(
            DomainEvent::UserCreated(UserCreated {
                user_id: UserId::new(),
                uid: FirebaseUid::parse("u").unwrap(),
                email_verified: false,
                email: None,
                display_name: None,
                verified_email: None,
            }),
            Utc::now(),
        );
        let json = encode(&RawEvent::from(&e));
        assert!(json.contains("\"v\":1"));
        assert_eq!(decode(&json).unwrap(), e);
        assert!(matches!(decode("garbage"), Err(Undecodable::Invalid(_))));
        assert!(matches!(
            decode(&json.replace("\"v\":1", "\"v\":9")),
            Err(Undecodable::Newer(_))
        ));
        assert!(matches!(
            decode(&json.replace("user.created", "user.future")),
            Err(Undecodable::Newer(_))
        ));
        assert!(matches!(
            decode(&json.replace("\"uid\":\"u\"", "\"uid\":\"\"")),
            Err(Undecodable::Invalid(_))
        ));
    }
}

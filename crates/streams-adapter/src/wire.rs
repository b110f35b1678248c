//! The versioned JSON an event travels as on a stream (field `event`).

use chrono::{DateTime, Utc};
use domain::{DomainEvent, EventEnvelope};
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

pub(crate) fn encode(event: &EventEnvelope) -> String {
    let wire = EventWire {
        v: WIRE_VERSION,
        id: event.id,
        event_type: event.event.event_type().to_owned(),
        occurred_at: event.occurred_at,
        data: event.event.payload(),
    };
    serde_json::to_string(&wire).unwrap_or_default()
}

/// Why an entry cannot become an event (it goes to the dead-letter stream).
pub(crate) fn decode(json: &str) -> Result<EventEnvelope, String> {
    let wire: EventWire = serde_json::from_str(json).map_err(|e| format!("not an event: {e}"))?;
    if wire.v > WIRE_VERSION {
        return Err(format!(
            "wire version {} is newer than this consumer ({WIRE_VERSION})",
            wire.v
        ));
    }
    let event = DomainEvent::from_parts(&wire.event_type, wire.data).map_err(|e| e.to_string())?;
    Ok(EventEnvelope {
        id: wire.id,
        occurred_at: wire.occurred_at,
        event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{FirebaseUid, UserCreated, UserId};

    #[test]
    fn events_round_trip_and_garbage_is_an_error() {
        let e = EventEnvelope::new(
            DomainEvent::UserCreated(UserCreated {
                user_id: UserId::new(),
                uid: FirebaseUid::parse("u").unwrap(),
                email: None,
                display_name: None,
                verified_email: None,
            }),
            Utc::now(),
        );
        let json = encode(&e);
        assert!(json.contains("\"v\":1"));
        assert_eq!(decode(&json).unwrap(), e);
        assert!(decode("garbage").is_err());
        assert!(decode(&json.replace("\"v\":1", "\"v\":9")).is_err());
        assert!(decode(&json.replace("user.created", "user.exploded")).is_err());
    }
}

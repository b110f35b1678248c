//! Domain events: facts that other parts of the system react to. They travel
//! through the transactional outbox and the event bus, so their JSON shape is a
//! contract: add optional fields freely, never rename or remove one.

use crate::user::{DisplayName, Email, FirebaseUid, PhotoUrl, User, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

/// The stream (topic) that carries user lifecycle events.
pub const USERS_TOPIC: &str = "users";

/// An event with its identity and time. `id` is what idempotent consumers
/// deduplicate on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    #[serde(flatten)]
    pub event: DomainEvent,
}

impl EventEnvelope {
    /// Wraps `event` with a fresh time-ordered id.
    pub fn new(event: DomainEvent, occurred_at: DateTime<Utc>) -> Self {
        Self {
            id: Uuid::now_v7(),
            occurred_at,
            event,
        }
    }
}

/// Everything that can happen to a user that others care about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum DomainEvent {
    #[serde(rename = "user.created")]
    UserCreated(UserCreated),
    #[serde(rename = "user.profile_updated")]
    ProfileUpdated(ProfileUpdated),
    #[serde(rename = "user.deleted")]
    UserDeleted(UserDeleted),
}

/// An event type string no version of this code knows, or a payload that does
/// not fit its type.
#[derive(Debug, Error)]
#[error("cannot decode event of type {event_type:?}: {reason}")]
pub struct UndecodableEvent {
    pub event_type: String,
    pub reason: String,
}

impl DomainEvent {
    /// The stable type name, e.g. `user.created`.
    pub fn event_type(&self) -> &'static str {
        match self {
            DomainEvent::UserCreated(_) => "user.created",
            DomainEvent::ProfileUpdated(_) => "user.profile_updated",
            DomainEvent::UserDeleted(_) => "user.deleted",
        }
    }

    /// The stream the event is published on.
    pub fn topic(&self) -> &'static str {
        USERS_TOPIC
    }

    /// The payload without its type tag, as stored in the outbox.
    pub fn payload(&self) -> serde_json::Value {
        let result = match self {
            DomainEvent::UserCreated(e) => serde_json::to_value(e),
            DomainEvent::ProfileUpdated(e) => serde_json::to_value(e),
            DomainEvent::UserDeleted(e) => serde_json::to_value(e),
        };
        // Plain structs of strings and ids always serialize.
        result.unwrap_or(serde_json::Value::Null)
    }

    /// Rebuilds an event from its type name and payload.
    pub fn from_parts(
        event_type: &str,
        payload: serde_json::Value,
    ) -> Result<Self, UndecodableEvent> {
        let fail = |reason: String| UndecodableEvent {
            event_type: event_type.to_owned(),
            reason,
        };
        match event_type {
            "user.created" => serde_json::from_value(payload).map(DomainEvent::UserCreated),
            "user.profile_updated" => {
                serde_json::from_value(payload).map(DomainEvent::ProfileUpdated)
            }
            "user.deleted" => serde_json::from_value(payload).map(DomainEvent::UserDeleted),
            _ => return Err(fail("unknown event type".into())),
        }
        .map_err(|e| fail(e.to_string()))
    }

    /// The uid of the user the event is about.
    pub fn subject_uid(&self) -> &FirebaseUid {
        match self {
            DomainEvent::UserCreated(e) => &e.uid,
            DomainEvent::ProfileUpdated(e) => &e.uid,
            DomainEvent::UserDeleted(e) => &e.uid,
        }
    }
}

/// A user row was inserted for a uid seen for the first time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCreated {
    pub user_id: UserId,
    pub uid: FirebaseUid,
    pub email: Option<Email>,
    pub display_name: Option<DisplayName>,
}

/// A profile changed; carries the profile as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileUpdated {
    pub user_id: UserId,
    pub uid: FirebaseUid,
    pub email: Option<Email>,
    pub display_name: Option<DisplayName>,
    pub photo_url: Option<PhotoUrl>,
}

/// A user deleted their account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDeleted {
    pub user_id: UserId,
    pub uid: FirebaseUid,
}

impl From<&User> for UserCreated {
    fn from(u: &User) -> Self {
        Self {
            user_id: u.id,
            uid: u.uid.clone(),
            email: u.email.clone(),
            display_name: u.display_name.clone(),
        }
    }
}

impl From<&User> for ProfileUpdated {
    fn from(u: &User) -> Self {
        Self {
            user_id: u.id,
            uid: u.uid.clone(),
            email: u.email.clone(),
            display_name: u.display_name.clone(),
            photo_url: u.photo_url.clone(),
        }
    }
}

impl From<&User> for UserDeleted {
    fn from(u: &User) -> Self {
        Self {
            user_id: u.id,
            uid: u.uid.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created() -> DomainEvent {
        DomainEvent::UserCreated(UserCreated {
            user_id: UserId::new(),
            uid: FirebaseUid::parse("uid-1").unwrap(),
            email: Some(Email::parse("ada@example.com").unwrap()),
            display_name: Some(DisplayName::parse("Ada").unwrap()),
        })
    }

    #[test]
    fn envelope_json_has_a_stable_shape() {
        let env = EventEnvelope::new(created(), Utc::now());
        let json = serde_json::to_value(&env).unwrap();
        assert_eq!(json["type"], "user.created");
        assert_eq!(json["data"]["uid"], "uid-1");
        assert_eq!(json["data"]["display_name"], "Ada");
        assert!(json["id"].is_string());
        assert!(json["occurred_at"].is_string());
        let back: EventEnvelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn events_round_trip_through_their_parts() {
        let e = created();
        let back = DomainEvent::from_parts(e.event_type(), e.payload()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn unknown_types_and_bad_payloads_are_errors_not_panics() {
        assert!(DomainEvent::from_parts("user.exploded", serde_json::json!({})).is_err());
        let err =
            DomainEvent::from_parts("user.created", serde_json::json!({"uid": ""})).unwrap_err();
        assert_eq!(err.event_type, "user.created");
    }
}

//! Domain events: facts that other parts of the system react to. They travel
//! through the transactional outbox and the event bus, so their JSON shape is a
//! contract: add optional fields freely, never rename or remove one.
//!
//! Events carry identifiers, never personal data: they are kept in the
//! outbox, the stream and its dead letters long after the fact, where an
//! account's deletion cannot reach them. A consumer that needs a user's
//! address or name reads it from the users table when it acts (and finds
//! none once the account is gone). The personal fields of earlier versions
//! (`email`, `display_name`, `photo_url`, `verified_email`) still decode,
//! and are never written.

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

/// An event as the outbox stores it and the bus carries it: its identity,
/// its type name and its payload, whether or not this version of the code
/// knows the type. The relay moves these without decoding them, so a row
/// written by a newer version during a rolling deploy reaches a consumer
/// that knows it, instead of being dropped by one that does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawEvent {
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub topic: String,
    pub event_type: String,
    pub payload: serde_json::Value,
}

impl RawEvent {
    /// The typed event, if this version knows its type and the payload fits.
    pub fn decode(&self) -> Result<EventEnvelope, UndecodableEvent> {
        Ok(EventEnvelope {
            id: self.id,
            occurred_at: self.occurred_at,
            event: DomainEvent::from_parts(&self.event_type, self.payload.clone())?,
        })
    }
}

impl From<&EventEnvelope> for RawEvent {
    fn from(e: &EventEnvelope) -> Self {
        Self {
            id: e.id,
            occurred_at: e.occurred_at,
            topic: e.event.topic().to_owned(),
            event_type: e.event.event_type().to_owned(),
            payload: e.event.payload(),
        }
    }
}

/// Declares the domain events, each once: its variant, its payload type
/// (a struct with the subject's `uid`) and its stable type name. From the
/// one list come the enum (tagged by the type name on the wire), the type
/// names (`event_type`, `TYPES`), the payload without its tag, decoding
/// from the parts the outbox stores, and the subject.
macro_rules! domain_events {
    ($( $(#[$doc:meta])* $variant:ident($payload:ty) = $name:literal, )+) => {
        /// Everything that can happen to a user that others care about.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = "type", content = "data")]
        pub enum DomainEvent {
            $( $(#[$doc])* #[serde(rename = $name)] $variant($payload), )+
        }

        impl DomainEvent {
            /// Every type this version knows, as `event_type` names them.
            pub const TYPES: &'static [&'static str] = &[$($name),+];

            /// The stable type name, e.g. `user.created`.
            pub fn event_type(&self) -> &'static str {
                match self {
                    $(DomainEvent::$variant(_) => $name,)+
                }
            }

            /// The payload without its type tag, as stored in the outbox.
            pub fn payload(&self) -> serde_json::Value {
                let result = match self {
                    $(DomainEvent::$variant(e) => serde_json::to_value(e),)+
                };
                // Plain structs of strings and ids always serialize.
                result.unwrap_or(serde_json::Value::Null)
            }

            /// The uid of the user the event is about.
            pub fn subject_uid(&self) -> &FirebaseUid {
                match self {
                    $(DomainEvent::$variant(e) => &e.uid,)+
                }
            }

            /// The event of type `event_type` from its payload; `None` for a
            /// type this version does not know.
            fn decode_payload(
                event_type: &str,
                payload: serde_json::Value,
            ) -> Option<Result<Self, serde_json::Error>> {
                match event_type {
                    $($name => Some(serde_json::from_value(payload).map(DomainEvent::$variant)),)+
                    _ => None,
                }
            }
        }
    };
}

domain_events! {
    /// A user row was inserted for a uid seen for the first time.
    UserCreated(UserCreated) = "user.created",
    /// A profile changed.
    ProfileUpdated(ProfileUpdated) = "user.profile_updated",
    /// A user deleted their account.
    UserDeleted(UserDeleted) = "user.deleted",
    /// A token vouched for an address for the first time.
    EmailVerified(EmailVerified) = "user.email_verified",
}

/// An event type string this version of the code does not know, or a
/// payload that does not fit its type.
#[derive(Debug, Error)]
#[error("cannot decode event of type {event_type:?}: {reason}")]
pub struct UndecodableEvent {
    pub event_type: String,
    pub reason: String,
}

impl UndecodableEvent {
    /// The type is unknown to this version (a newer one may know it), as
    /// opposed to a known type whose payload does not fit.
    pub fn is_unknown_type(&self) -> bool {
        !DomainEvent::is_known_type(&self.event_type)
    }
}

impl DomainEvent {
    /// Whether this version of the code knows `event_type` (a consumer
    /// leaves types it does not know for a newer one).
    pub fn is_known_type(event_type: &str) -> bool {
        Self::TYPES.contains(&event_type)
    }

    /// The stream the event is published on.
    pub fn topic(&self) -> &'static str {
        USERS_TOPIC
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
        match Self::decode_payload(event_type, payload) {
            None => Err(fail("unknown event type".into())),
            Some(decoded) => decoded.map_err(|e| fail(e.to_string())),
        }
    }
}

/// A user row was inserted for a uid seen for the first time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCreated {
    pub user_id: UserId,
    pub uid: FirebaseUid,
    /// Whether the token that created the user vouched for an address
    /// (the users table has it): the only kind a welcome mail goes to.
    #[serde(default)]
    pub email_verified: bool,
    /// Written by earlier versions only (personal data stays in the users
    /// table now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
    /// Written by earlier versions only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<DisplayName>,
    /// Written by earlier versions only: the verified address itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_email: Option<Email>,
}

/// A user's token vouched for an address for the first time (or for a new
/// one): the identity provider verified that the user receives mail there
/// (the users table has it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailVerified {
    pub user_id: UserId,
    pub uid: FirebaseUid,
    /// Written by earlier versions only: the verified address itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
    /// Written by earlier versions only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<DisplayName>,
}

/// A profile changed (read it from the users table, or `GET /api/v1/me`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileUpdated {
    pub user_id: UserId,
    pub uid: FirebaseUid,
    /// Written by earlier versions only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
    /// Written by earlier versions only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<DisplayName>,
    /// Written by earlier versions only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo_url: Option<PhotoUrl>,
}

/// A user deleted their account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDeleted {
    pub user_id: UserId,
    pub uid: FirebaseUid,
}

impl UserCreated {
    /// The event for a user just created by a token that vouched for an
    /// address (`email_verified`) or for none.
    pub fn new(u: &User, email_verified: bool) -> Self {
        Self {
            user_id: u.id,
            uid: u.uid.clone(),
            email_verified,
            email: None,
            display_name: None,
            verified_email: None,
        }
    }

    /// Whether a verified address came with the creation (in this
    /// version's flag, or an earlier version's address).
    pub fn vouched_for_an_address(&self) -> bool {
        self.email_verified || self.verified_email.is_some()
    }
}

impl EmailVerified {
    pub fn new(u: &User) -> Self {
        Self {
            user_id: u.id,
            uid: u.uid.clone(),
            email: None,
            display_name: None,
        }
    }
}

impl From<&User> for ProfileUpdated {
    fn from(u: &User) -> Self {
        Self {
            user_id: u.id,
            uid: u.uid.clone(),
            email: None,
            display_name: None,
            photo_url: None,
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

    fn user() -> User {
        User {
            id: UserId::new(),
            uid: FirebaseUid::parse("uid-1").unwrap(),
            email: Some(Email::parse("ada@example.com").unwrap()),
            display_name: Some(DisplayName::parse("Ada Lovelace").unwrap()),
            photo_url: Some(PhotoUrl::parse("https://example.com/ada.png").unwrap()),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn created() -> DomainEvent {
        DomainEvent::UserCreated(UserCreated::new(&user(), true))
    }

    #[test]
    fn envelope_json_has_a_stable_shape() {
        let env = EventEnvelope::new(created(), Utc::now());
        let json = serde_json::to_value(&env).unwrap();
        assert_eq!(json["type"], "user.created");
        assert_eq!(json["data"]["uid"], "uid-1");
        assert_eq!(json["data"]["email_verified"], true);
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
    fn no_event_carries_personal_data() {
        let u = user();
        for event in [
            created(),
            DomainEvent::EmailVerified(EmailVerified::new(&u)),
            DomainEvent::ProfileUpdated((&u).into()),
            DomainEvent::UserDeleted((&u).into()),
        ] {
            let json = event.payload().to_string();
            for personal in ["ada@example.com", "Ada Lovelace", "ada.png"] {
                assert!(!json.contains(personal), "{}: {json}", event.event_type());
            }
        }
    }

    #[test]
    fn an_event_of_an_earlier_version_with_personal_data_still_decodes() {
        let old = serde_json::json!({
            "user_id": UserId::new(),
            "uid": "u",
            "email": "typed@example.com",
            "display_name": "Ada",
            "verified_email": "ada@example.com"
        });
        let DomainEvent::UserCreated(e) = DomainEvent::from_parts("user.created", old).unwrap()
        else {
            panic!("not a UserCreated");
        };
        assert!(e.vouched_for_an_address() && !e.email_verified);
        let old = serde_json::json!({"user_id": UserId::new(), "uid": "u", "email": "a@b.com", "display_name": null});
        assert!(DomainEvent::from_parts("user.email_verified", old).is_ok());
    }

    #[test]
    fn an_event_from_before_verified_addresses_still_decodes() {
        let old = serde_json::json!({
            "user_id": UserId::new(),
            "uid": "u",
            "email": "typed@example.com",
            "display_name": null
        });
        let DomainEvent::UserCreated(e) = DomainEvent::from_parts("user.created", old).unwrap()
        else {
            panic!("not a UserCreated");
        };
        assert!(!e.vouched_for_an_address());
    }

    #[test]
    fn every_known_type_round_trips_and_is_listed() {
        let uid = FirebaseUid::parse("u").unwrap();
        let email = Email::parse("a@b.com").unwrap();
        let events = [
            created(),
            DomainEvent::EmailVerified(EmailVerified {
                user_id: UserId::new(),
                uid: uid.clone(),
                email: Some(email),
                display_name: None,
            }),
            DomainEvent::UserDeleted(UserDeleted {
                user_id: UserId::new(),
                uid,
            }),
        ];
        for e in events {
            assert!(DomainEvent::is_known_type(e.event_type()));
            assert_eq!(
                DomainEvent::from_parts(e.event_type(), e.payload()).unwrap(),
                e
            );
        }
        assert_eq!(DomainEvent::TYPES.len(), 4);
        assert!(!DomainEvent::is_known_type("user.future"));
    }

    #[test]
    fn unknown_types_and_bad_payloads_are_errors_not_panics() {
        assert!(DomainEvent::from_parts("user.exploded", serde_json::json!({})).is_err());
        let err =
            DomainEvent::from_parts("user.created", serde_json::json!({"uid": ""})).unwrap_err();
        assert_eq!(err.event_type, "user.created");
    }
}

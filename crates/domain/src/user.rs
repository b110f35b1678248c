//! Users and the value objects that make up a profile.
//!
//! Every value object is a newtype whose only constructor is `parse`: once you
//! hold a `DisplayName`, it is trimmed, non-empty and at most 100 characters.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use thiserror::Error;
use uuid::Uuid;

/// The primary key of a user row: a UUID v7 (time-ordered), minted by the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(Uuid);

impl UserId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for UserId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Invisible formatting characters that let a name display as something
/// else: zero-width characters, line and paragraph separators, and the
/// bidirectional overrides and isolates ("Eve\u{202E}nimda" reads "Eveadmin").
fn has_invisible_format(s: &str) -> bool {
    s.chars().any(|c| {
        matches!(c,
            '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}')
    })
}

/// The Firebase Authentication uid (`sub` claim): non-empty, at most 128 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct FirebaseUid(String);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidFirebaseUid {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters", max = FirebaseUid::MAX_CHARS)]
    TooLong,
    #[error("must not contain control characters")]
    ControlCharacter,
}

impl FirebaseUid {
    pub const MAX_CHARS: usize = 128;

    pub fn parse(raw: &str) -> Result<Self, InvalidFirebaseUid> {
        if raw.is_empty() {
            return Err(InvalidFirebaseUid::Empty);
        }
        if raw.chars().count() > Self::MAX_CHARS {
            return Err(InvalidFirebaseUid::TooLong);
        }
        if has_control(raw) {
            return Err(InvalidFirebaseUid::ControlCharacter);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FirebaseUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for FirebaseUid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// An e-mail address: trimmed, one `@`, a non-empty local part (at most 64 bytes)
/// and a dotted or single-label domain, no whitespace or control characters,
/// at most 254 bytes in all. The domain is lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidEmail {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most 254 characters")]
    TooLong,
    #[error("must be an e-mail address like name@example.com")]
    Malformed,
}

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, InvalidEmail> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(InvalidEmail::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(InvalidEmail::TooLong);
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(InvalidEmail::Malformed);
        }
        let (local, domain) = s.split_once('@').ok_or(InvalidEmail::Malformed)?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && !local.contains(['<', '>', '(', ')', '[', ']', ',', ';', ':', '"', '\\']);
        let domain_ok = !domain.is_empty()
            && domain.len() <= 253
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if !local_ok || !domain_ok {
            return Err(InvalidEmail::Malformed);
        }
        Ok(Self(format!("{local}@{}", domain.to_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// A display name: trimmed, 1 to 100 characters, no control characters
/// (so no CR/LF can ever reach a mail header).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DisplayName(String);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidDisplayName {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters", max = DisplayName::MAX_CHARS)]
    TooLong,
    #[error("must not contain control characters")]
    ControlCharacter,
    #[error("must not contain invisible formatting characters")]
    InvisibleCharacter,
}

impl DisplayName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, InvalidDisplayName> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(InvalidDisplayName::Empty);
        }
        if s.chars().count() > Self::MAX_CHARS {
            return Err(InvalidDisplayName::TooLong);
        }
        if has_control(s) {
            return Err(InvalidDisplayName::ControlCharacter);
        }
        if has_invisible_format(s) {
            return Err(InvalidDisplayName::InvisibleCharacter);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DisplayName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// A profile photo URL: absolute `http` or `https` with a host, at most 2048 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct PhotoUrl(String);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidPhotoUrl {
    #[error("must be at most {max} characters", max = PhotoUrl::MAX_CHARS)]
    TooLong,
    #[error("must be an absolute http(s) URL")]
    Malformed,
}

impl PhotoUrl {
    pub const MAX_CHARS: usize = 2048;

    pub fn parse(raw: &str) -> Result<Self, InvalidPhotoUrl> {
        let s = raw.trim();
        if s.chars().count() > Self::MAX_CHARS {
            return Err(InvalidPhotoUrl::TooLong);
        }
        let url = url::Url::parse(s).map_err(|_| InvalidPhotoUrl::Malformed)?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(InvalidPhotoUrl::Malformed);
        }
        // The serialized form is percent-encoded and may be longer than the input.
        let normalized = String::from(url);
        if normalized.chars().count() > Self::MAX_CHARS {
            return Err(InvalidPhotoUrl::TooLong);
        }
        Ok(Self(normalized))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhotoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PhotoUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// A user's profile as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub uid: FirebaseUid,
    pub email: Option<Email>,
    pub display_name: Option<DisplayName>,
    pub photo_url: Option<PhotoUrl>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl User {
    /// The user's profile after `patch`: fields the patch leaves out keep their value.
    pub fn patched(&self, patch: &ProfilePatch) -> ProfilePatch {
        ProfilePatch {
            email: patch.email.clone().or_else(|| self.email.clone()),
            display_name: patch
                .display_name
                .clone()
                .or_else(|| self.display_name.clone()),
            photo_url: patch.photo_url.clone().or_else(|| self.photo_url.clone()),
        }
    }

    /// Whether applying `patch` would change anything.
    pub fn would_change(&self, patch: &ProfilePatch) -> bool {
        let next = self.patched(patch);
        next.email != self.email
            || next.display_name != self.display_name
            || next.photo_url != self.photo_url
    }
}

/// A partial profile update: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfilePatch {
    pub email: Option<Email>,
    pub display_name: Option<DisplayName>,
    pub photo_url: Option<PhotoUrl>,
}

impl ProfilePatch {
    /// Fills the fields this patch leaves out from `defaults` (used only when a
    /// user is created: the verified token's claims seed the profile).
    pub fn or_defaults(&self, defaults: &ProfileDefaults) -> ProfilePatch {
        ProfilePatch {
            email: self.email.clone().or_else(|| defaults.email.clone()),
            display_name: self
                .display_name
                .clone()
                .or_else(|| defaults.display_name.clone()),
            photo_url: self
                .photo_url
                .clone()
                .or_else(|| defaults.photo_url.clone()),
        }
    }
}

/// Profile values taken from the verified token, used when a request creates a
/// user and does not give them itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileDefaults {
    pub email: Option<Email>,
    pub display_name: Option<DisplayName>,
    pub photo_url: Option<PhotoUrl>,
    /// The address the identity provider verified (`email_verified: true`),
    /// the only one a welcome mail may go to. Unlike the other fields it
    /// matters after creation too: the first time a user's token vouches
    /// for an address, `EmailVerified` is appended.
    pub verified_email: Option<Email>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_accepts_128_chars_and_refuses_129() {
        assert!(FirebaseUid::parse(&"a".repeat(128)).is_ok());
        assert_eq!(
            FirebaseUid::parse(&"a".repeat(129)),
            Err(InvalidFirebaseUid::TooLong)
        );
        assert_eq!(FirebaseUid::parse(""), Err(InvalidFirebaseUid::Empty));
        assert_eq!(
            FirebaseUid::parse("a\nb"),
            Err(InvalidFirebaseUid::ControlCharacter)
        );
    }

    #[test]
    fn uid_counts_characters_not_bytes() {
        assert!(FirebaseUid::parse(&"é".repeat(128)).is_ok());
    }

    #[test]
    fn email_is_trimmed_and_its_domain_lowercased() {
        let e = Email::parse("  Ada.Lovelace@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "Ada.Lovelace@example.com");
    }

    #[test]
    fn email_refuses_what_is_not_an_address() {
        for bad in [
            "",
            "   ",
            "plain",
            "@example.com",
            "a@",
            "a@@b.com",
            "a b@c.com",
            "a@b..com",
            "a@-b.com",
            "a\r\nBcc: x@y.com",
            "\"a\"@b.com",
            ".a@b.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(
            Email::parse(&format!("a@{}.com", "b".repeat(260))),
            Err(InvalidEmail::TooLong)
        );
    }

    #[test]
    fn email_accepts_plus_tags_and_single_label_domains() {
        assert!(Email::parse("ada+tag@example.co.uk").is_ok());
        assert!(Email::parse("root@localhost").is_ok());
        assert!(Email::parse("zoë@exämple.com").is_ok());
    }

    #[test]
    fn display_name_is_trimmed_and_bounded() {
        assert_eq!(DisplayName::parse("  Ada  ").unwrap().as_str(), "Ada");
        assert_eq!(DisplayName::parse("   "), Err(InvalidDisplayName::Empty));
        assert!(DisplayName::parse(&"x".repeat(100)).is_ok());
        assert_eq!(
            DisplayName::parse(&"x".repeat(101)),
            Err(InvalidDisplayName::TooLong)
        );
        assert_eq!(
            DisplayName::parse("Eve\r\nBcc: victim@example.com"),
            Err(InvalidDisplayName::ControlCharacter)
        );
        assert!(DisplayName::parse("Zoë \"Z\" O'Brien, Jr.").is_ok());
        assert!(DisplayName::parse("李小龍").is_ok());
        for sneaky in [
            "Eve\u{202E}nimda",
            "A\u{200B}da",
            "Ada\u{2028}Bcc",
            "\u{2066}x\u{2069}",
        ] {
            assert_eq!(
                DisplayName::parse(sneaky),
                Err(InvalidDisplayName::InvisibleCharacter),
                "{sneaky:?}"
            );
        }
    }

    #[test]
    fn photo_url_must_be_absolute_http() {
        assert!(PhotoUrl::parse("https://cdn.example.com/a.png").is_ok());
        assert!(PhotoUrl::parse("http://example.com/a.png").is_ok());
        for bad in [
            "ftp://example.com/a.png",
            "javascript:alert(1)",
            "/relative.png",
            "not a url",
            "https://",
        ] {
            assert!(PhotoUrl::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let long = format!("https://example.com/{}", "a".repeat(2048));
        assert_eq!(PhotoUrl::parse(&long), Err(InvalidPhotoUrl::TooLong));
    }

    #[test]
    fn value_objects_parse_when_deserialized() {
        let err = serde_json::from_str::<DisplayName>("\"\"").unwrap_err();
        assert!(err.to_string().contains("must not be empty"));
        let ok: Email = serde_json::from_str("\"a@b.com\"").unwrap();
        assert_eq!(ok.as_str(), "a@b.com");
    }

    fn user() -> User {
        let now = Utc::now();
        User {
            id: UserId::new(),
            uid: FirebaseUid::parse("u1").unwrap(),
            email: Some(Email::parse("a@b.com").unwrap()),
            display_name: None,
            photo_url: None,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn a_patch_changes_only_the_fields_it_gives() {
        let u = user();
        let patch = ProfilePatch {
            display_name: Some(DisplayName::parse("Ada").unwrap()),
            ..ProfilePatch::default()
        };
        let next = u.patched(&patch);
        assert_eq!(next.email, u.email);
        assert_eq!(next.display_name.unwrap().as_str(), "Ada");
        assert!(u.would_change(&patch));
        assert!(!u.would_change(&ProfilePatch::default()));
        let same = ProfilePatch {
            email: u.email.clone(),
            ..ProfilePatch::default()
        };
        assert!(!u.would_change(&same));
    }

    #[test]
    fn defaults_fill_only_missing_fields() {
        let patch = ProfilePatch {
            display_name: Some(DisplayName::parse("Given").unwrap()),
            ..ProfilePatch::default()
        };
        let defaults = ProfileDefaults {
            email: Some(Email::parse("claim@b.com").unwrap()),
            display_name: Some(DisplayName::parse("Claim").unwrap()),
            photo_url: None,
            verified_email: None,
        };
        let merged = patch.or_defaults(&defaults);
        assert_eq!(merged.display_name.unwrap().as_str(), "Given");
        assert_eq!(merged.email.unwrap().as_str(), "claim@b.com");
    }
}

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
    /// When the token was issued (`iat`): a user is never created from a
    /// token issued before the uid's account was deleted.
    pub issued_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[cfg(test)]
mod tests;

//! Push tokens (FCM registration tokens) and the platforms they belong to.

use crate::user::UserId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::{fmt, str::FromStr};
use thiserror::Error;

/// An FCM registration token: non-empty, at most 4096 characters, printable
/// ASCII without whitespace.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct PushToken(String);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidPushToken {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters", max = PushToken::MAX_CHARS)]
    TooLong,
    #[error("must be printable ASCII without whitespace")]
    BadCharacter,
}

impl PushToken {
    pub const MAX_CHARS: usize = 4096;

    pub fn parse(raw: &str) -> Result<Self, InvalidPushToken> {
        if raw.is_empty() {
            return Err(InvalidPushToken::Empty);
        }
        if raw.len() > Self::MAX_CHARS {
            return Err(InvalidPushToken::TooLong);
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidPushToken::BadCharacter);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short, stable, non-reversible label for logs: push tokens are
    /// credentials and never appear in logs themselves.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.0.as_bytes());
        digest[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for PushToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PushToken({})", self.fingerprint())
    }
}

impl<'de> Deserialize<'de> for PushToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// The platform a push token was issued on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Ios,
    Android,
    Web,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("must be one of: ios, android, web")]
pub struct InvalidPlatform;

impl Platform {
    pub const ALL: [Platform; 3] = [Platform::Ios, Platform::Android, Platform::Web];

    pub fn as_str(&self) -> &'static str {
        match self {
            Platform::Ios => "ios",
            Platform::Android => "android",
            Platform::Web => "web",
        }
    }
}

impl FromStr for Platform {
    type Err = InvalidPlatform;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or(InvalidPlatform)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A registered push token as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushTokenRecord {
    pub token: PushToken,
    pub platform: Platform,
    pub user_id: UserId,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_token_is_bounded_and_printable() {
        assert!(PushToken::parse("fcm:APA91b-xyz_123").is_ok());
        assert_eq!(PushToken::parse(""), Err(InvalidPushToken::Empty));
        assert!(PushToken::parse(&"a".repeat(4096)).is_ok());
        assert_eq!(
            PushToken::parse(&"a".repeat(4097)),
            Err(InvalidPushToken::TooLong)
        );
        assert_eq!(PushToken::parse("a b"), Err(InvalidPushToken::BadCharacter));
        assert_eq!(
            PushToken::parse("ünicode"),
            Err(InvalidPushToken::BadCharacter)
        );
    }

    #[test]
    fn push_token_debug_never_shows_the_token() {
        let t = PushToken::parse("secret-token-value").unwrap();
        let shown = format!("{t:?}");
        assert!(!shown.contains("secret"));
        assert_eq!(t.fingerprint().len(), 12);
    }

    #[test]
    fn platform_parses_the_three_names_only() {
        assert_eq!("ios".parse::<Platform>(), Ok(Platform::Ios));
        assert_eq!("android".parse::<Platform>(), Ok(Platform::Android));
        assert_eq!("web".parse::<Platform>(), Ok(Platform::Web));
        assert!("IOS".parse::<Platform>().is_err());
        assert!("windows".parse::<Platform>().is_err());
        let p: Platform = serde_json::from_str("\"android\"").unwrap();
        assert_eq!(p, Platform::Android);
    }
}

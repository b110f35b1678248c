//! Uploads: what a user may store, and the limits of each purpose.
//!
//! A client asks for an upload of a purpose; the object store receives the
//! bytes directly (a presigned POST whose policy enforces these limits);
//! the upload is then completed, which checks the stored object again.

use crate::user::UserId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use thiserror::Error;
use uuid::Uuid;

/// An upload's id (random: it names a stored object and, for an avatar,
/// its public link).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UploadId(pub Uuid);

impl UploadId {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for UploadId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What an upload is for; each purpose has its own limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadPurpose {
    /// The profile picture: completing it sets the profile's `photo_url`.
    Avatar,
    /// Any other file the app lets its users keep (an attachment).
    Attachment,
}

/// The limits of one purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// The content types accepted, exactly.
    pub content_types: &'static [&'static str],
    /// The largest object accepted, in bytes.
    pub max_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidUpload {
    #[error("unknown purpose (one of: avatar, attachment)")]
    UnknownPurpose,
    #[error("content type not accepted for this purpose (one of: {0})")]
    ContentType(String),
    #[error("must be between 1 and {0} bytes")]
    Size(u64),
}

impl UploadPurpose {
    pub const ALL: [Self; 2] = [Self::Avatar, Self::Attachment];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Avatar => "avatar",
            Self::Attachment => "attachment",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidUpload> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == raw)
            .ok_or(InvalidUpload::UnknownPurpose)
    }

    pub fn limits(self) -> UploadLimits {
        match self {
            Self::Avatar => UploadLimits {
                content_types: &["image/jpeg", "image/png", "image/webp", "image/heic"],
                max_bytes: 5 * 1024 * 1024,
            },
            Self::Attachment => UploadLimits {
                content_types: &[
                    "image/jpeg",
                    "image/png",
                    "image/webp",
                    "image/heic",
                    "application/pdf",
                    "text/plain",
                ],
                max_bytes: 20 * 1024 * 1024,
            },
        }
    }

    /// Checks a requested content type and size against the limits.
    pub fn check(self, content_type: &str, size: u64) -> Result<(), InvalidUpload> {
        let limits = self.limits();
        if !limits.content_types.contains(&content_type) {
            return Err(InvalidUpload::ContentType(limits.content_types.join(", ")));
        }
        if size == 0 || size > limits.max_bytes {
            return Err(InvalidUpload::Size(limits.max_bytes));
        }
        Ok(())
    }
}

/// Where an upload is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadStatus {
    /// Presigned; the object may or may not have arrived.
    Pending,
    /// Checked and in use.
    Completed,
    /// An avatar a newer one replaced; deleted after a grace period.
    Replaced,
}

impl UploadStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Completed => "completed",
            Self::Replaced => "replaced",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Pending, Self::Completed, Self::Replaced]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// One upload as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    pub id: UploadId,
    pub user_id: UserId,
    pub purpose: UploadPurpose,
    /// The object's key in the store: `users/<user id>/<upload id>`.
    pub object_key: String,
    pub content_type: String,
    /// The size the client announced; the stored size once completed.
    pub size: u64,
    pub status: UploadStatus,
    pub created_at: DateTime<Utc>,
    /// Until when the presigned POST may be used (pending uploads only
    /// matter until then).
    pub expires_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub replaced_at: Option<DateTime<Utc>>,
}

impl Upload {
    /// Where every object of `user` lives (what deleting the user removes).
    pub fn user_prefix(user: UserId) -> String {
        format!("users/{user}/")
    }

    /// Where the upload form stores the object.
    pub fn object_key_for(user: UserId, id: UploadId) -> String {
        format!("{}{id}", Self::user_prefix(user))
    }

    /// Where a completed upload's object is kept: a key no form names, so
    /// what was checked at completion is what stays (posting the form
    /// again before it expires changes nothing).
    pub fn stored_key_for(user: UserId, id: UploadId) -> String {
        format!("{}stored/{id}", Self::user_prefix(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_per_purpose() {
        assert_eq!(UploadPurpose::parse("avatar"), Ok(UploadPurpose::Avatar));
        assert_eq!(
            UploadPurpose::parse("Avatar"),
            Err(InvalidUpload::UnknownPurpose)
        );
        let avatar = UploadPurpose::Avatar;
        assert!(avatar.check("image/png", 1).is_ok());
        assert!(avatar.check("image/png", 5 * 1024 * 1024).is_ok());
        assert_eq!(
            avatar.check("image/png", 5 * 1024 * 1024 + 1),
            Err(InvalidUpload::Size(5 * 1024 * 1024))
        );
        assert_eq!(
            avatar.check("image/png", 0),
            Err(InvalidUpload::Size(5 * 1024 * 1024))
        );
        assert!(matches!(
            avatar.check("application/pdf", 10),
            Err(InvalidUpload::ContentType(_))
        ));
        assert!(
            UploadPurpose::Attachment
                .check("application/pdf", 10)
                .is_ok()
        );
    }

    #[test]
    fn keys_live_under_the_users_prefix() {
        let user = UserId::from_uuid(Uuid::nil());
        let id = UploadId(Uuid::nil());
        let key = Upload::object_key_for(user, id);
        assert!(key.starts_with(&Upload::user_prefix(user)));
        assert_eq!(
            key,
            "users/00000000-0000-0000-0000-000000000000/00000000-0000-0000-0000-000000000000"
        );
    }
}

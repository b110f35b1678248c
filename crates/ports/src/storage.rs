//! Object storage for uploads, and the records of those uploads.
//!
//! The bytes never pass through the API: [`ObjectStore::presign_post`]
//! hands the client a form (a POST policy) that lets it store exactly one
//! object, of a bounded size and one content type, directly in the store;
//! the store enforces the policy. Reads are presigned GET URLs with a short
//! expiry, or links under a public base URL (a CDN) when one is configured.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{Upload, UploadId, UserId};
use std::collections::BTreeMap;
use std::time::Duration;
use thiserror::Error;

/// What a presigned POST allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostPolicy {
    /// The one key the object may be stored under.
    pub key: String,
    /// The one content type it may have.
    pub content_type: String,
    /// The size range the store accepts, in bytes.
    pub min_bytes: u64,
    pub max_bytes: u64,
    /// How long the form may be used.
    pub expires_in: Duration,
}

/// A form the client posts as `multipart/form-data` to `url`: every field
/// of `fields`, then the file as the last part, named `file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedPost {
    pub url: String,
    pub fields: BTreeMap<String, String>,
    pub expires_at: DateTime<Utc>,
}

/// What the store holds under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub content_type: Option<String>,
}

#[derive(Debug, Error)]
pub enum StorageError {
    /// The store could not be reached, timed out or answered 5xx;
    /// retrying may succeed.
    #[error("object store unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// It refused (credentials, bucket, a malformed request): retrying the
    /// same thing will not help.
    #[error(transparent)]
    Unknown(anyhow::Error),
}

/// An S3-compatible bucket (or the local file-system stand-in).
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// A form that lets its holder store one object as `policy` allows,
    /// until it expires. Signing only: no request is made.
    fn presign_post(&self, policy: &PostPolicy) -> Result<PresignedPost, StorageError>;

    /// A link that reads the object at `key`: under the public base URL
    /// when there is one, else a presigned GET valid for `expires_in`.
    fn read_url(&self, key: &str, expires_in: Duration) -> Result<String, StorageError>;

    /// The lasting link to `key` under the public base URL, if there is
    /// one (`None`: objects are private and read through signed links).
    fn public_url(&self, key: &str) -> Option<String>;

    /// What is stored at `key`; `None` when nothing is.
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError>;

    /// Deletes the object at `key`; deleting nothing is not an error.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;

    /// Deletes every object whose key starts with `prefix` (which must end
    /// with `/`); returns how many there were. Idempotent.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StorageError>;

    /// Copies the object at `from` to `to` (content type included), as it
    /// is at that moment: what is checked at `to` afterwards is what stays
    /// there, whatever is posted to `from` later. `Ok(false)` when nothing
    /// is stored at `from`.
    async fn copy(&self, from: &str, to: &str) -> Result<bool, StorageError>;
}

#[derive(Debug, Error)]
pub enum UploadStoreError {
    #[error("upload store unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

/// What one user may have in the store: uploads waiting to be completed,
/// and completed files and their bytes (a replaced avatar, kept for a
/// grace period, no longer counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadQuota {
    pub max_pending: u32,
    pub max_files: u32,
    pub max_bytes: u64,
}

/// What a user's completed uploads take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaUse {
    pub files: u64,
    pub bytes: u64,
}

impl UploadQuota {
    /// Whether one more file of `size` bytes fits beside `used`.
    pub fn admits(&self, used: QuotaUse, size: u64) -> bool {
        used.files < u64::from(self.max_files) && used.bytes.saturating_add(size) <= self.max_bytes
    }
}

#[derive(Debug, Error)]
pub enum CreateUploadError {
    /// The user already has `max` uploads waiting to be completed.
    #[error("at most {max} uploads may be pending at once")]
    TooManyPending { max: u32 },
    /// A file of the announced size would not fit in the user's quota.
    #[error("the upload quota is used up")]
    QuotaExceeded { quota: UploadQuota, used: QuotaUse },
    /// No user row: the caller has no profile yet.
    #[error("no such user")]
    NoUser,
    #[error("upload store unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

#[derive(Debug, Error)]
pub enum CompleteUploadError {
    /// The stored file would take the user past their quota.
    #[error("the upload quota is used up")]
    QuotaExceeded { quota: UploadQuota, used: QuotaUse },
    #[error("upload store unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

/// What completing an upload records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The stored object's size.
    pub size: u64,
    /// Where the checked object now is.
    pub stored_key: String,
    pub at: DateTime<Utc>,
}

/// What completing an upload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedUpload {
    pub upload: Upload,
    /// The avatar it replaced (now `Replaced`), if any.
    pub replaced: Option<Upload>,
}

/// The records of uploads (Postgres in production).
#[async_trait]
pub trait UploadRepository: Send + Sync + 'static {
    /// Stores a new pending upload, unless its user already has
    /// `quota.max_pending` pending uploads that have not expired, or the
    /// announced size would not fit beside their completed uploads (an
    /// avatar's beside all but the avatar it will replace); checked and
    /// inserted atomically, so concurrent requests cannot exceed either.
    async fn create(&self, upload: &Upload, quota: &UploadQuota) -> Result<(), CreateUploadError>;

    /// The upload `id` if it belongs to `user`.
    async fn find(&self, user: UserId, id: UploadId) -> Result<Option<Upload>, UploadStoreError>;

    /// The upload `id` of any user (for public avatar links).
    async fn find_any(&self, id: UploadId) -> Result<Option<Upload>, UploadStoreError>;

    /// Marks a pending upload completed with its stored `size`, its object
    /// now at `stored_key` (where no upload form writes); for an avatar,
    /// the user's previous completed avatar becomes `Replaced` in the same
    /// transaction. `QuotaExceeded` (nothing changed) when it would take
    /// the user past `quota` (checked under the user's lock). Completing a
    /// completed upload changes nothing and answers it again; `None` when
    /// there is no such upload of `user` (or it was replaced).
    async fn complete(
        &self,
        user: UserId,
        id: UploadId,
        completion: &Completion,
        quota: &UploadQuota,
    ) -> Result<Option<CompletedUpload>, CompleteUploadError>;

    /// The user's uploads, newest first (at most `limit`).
    async fn list(&self, user: UserId, limit: u32) -> Result<Vec<Upload>, UploadStoreError>;

    /// Uploads to clean up: pending ones that expired before
    /// `pending_before`, replaced ones replaced before `replaced_before`;
    /// oldest first, at most `limit`.
    async fn stale(
        &self,
        pending_before: DateTime<Utc>,
        replaced_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Upload>, UploadStoreError>;

    /// Forgets upload `id` (its object is gone). Idempotent.
    async fn remove(&self, id: UploadId) -> Result<(), UploadStoreError>;
}

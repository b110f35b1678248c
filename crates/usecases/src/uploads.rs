//! Uploads: presign a form for the object store, check the object when the
//! client says it is done (an avatar then becomes the profile's
//! `photo_url`), hand out read links, and clean up what was abandoned or
//! replaced.
//!
//! Longer than 450 lines: the four steps of an upload (presign, complete,
//! read, clean up) share the quota, key and purpose rules, and split apart
//! each would reach into the others.

use crate::profiles::{ProfileService, UpdateProfileError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{
    InvalidUpload, PhotoUrl, ProfilePatch, Upload, UploadId, UploadPurpose, UploadStatus, User,
    VerifiedIdentity,
};
use ports::{
    CompleteUploadError, Completion, CreateUploadError, HandleJob, Job, JobContext, JobFailure,
    ObjectStore, PostPolicy, PresignedPost, StorageError, UploadQuota, UploadRepository,
    UploadStoreError,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// How uploads behave.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// Uploads a user may have waiting to be completed at once.
    pub max_pending: u32,
    /// How long a presigned form may be used.
    pub form_ttl: Duration,
    /// How long a read link works.
    pub link_ttl: Duration,
    /// How long a replaced avatar stays (clients may still show it).
    pub replaced_grace: Duration,
    /// How long after its form expired an abandoned upload is deleted
    /// (an upload may still be arriving when the form expires).
    pub abandoned_after: Duration,
    /// Completed files one user may keep (a replaced avatar, kept for a
    /// grace period, does not count).
    pub max_files: u32,
    /// Bytes of completed files one user may keep.
    pub max_bytes: u64,
}

impl Default for UploadSettings {
    fn default() -> Self {
        Self {
            max_pending: 5,
            form_ttl: Duration::from_secs(15 * 60),
            link_ttl: Duration::from_secs(15 * 60),
            replaced_grace: Duration::from_secs(24 * 3600),
            abandoned_after: Duration::from_secs(3600),
            max_files: 200,
            max_bytes: 500 * 1024 * 1024,
        }
    }
}

impl UploadSettings {
    fn quota(&self) -> UploadQuota {
        UploadQuota {
            max_pending: self.max_pending,
            max_files: self.max_files,
            max_bytes: self.max_bytes,
        }
    }
}

#[derive(Debug, Error)]
pub enum UploadError {
    #[error(transparent)]
    Invalid(#[from] InvalidUpload),
    #[error("at most {max} uploads may wait to be completed at once")]
    TooManyPending { max: u32 },
    /// The file would take the user past their quota of stored files.
    #[error("the upload quota ({max_files} files, {max_bytes} bytes) is used up")]
    QuotaExceeded { max_files: u32, max_bytes: u64 },
    #[error("no such upload")]
    NotFound,
    /// `complete` before the object arrived.
    #[error("the file has not been uploaded yet")]
    NotUploaded,
    /// The stored object is not what was announced; it was deleted.
    #[error("the uploaded file is not acceptable: {0}")]
    Rejected(String),
    #[error("a store is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

macro_rules! unavailable_or_unknown {
    ($($ty:ident),*) => {$(
        impl From<$ty> for UploadError {
            fn from(e: $ty) -> Self {
                match e {
                    $ty::Unavailable(e) => Self::Unavailable(e),
                    $ty::Unknown(e) => Self::Unknown(e),
                }
            }
        }
    )*};
}
unavailable_or_unknown!(StorageError, UploadStoreError);

impl From<UpdateProfileError> for UploadError {
    fn from(e: UpdateProfileError) -> Self {
        match e {
            // The account went while the avatar was being completed.
            UpdateProfileError::AccountDeleted => Self::NotFound,
            UpdateProfileError::Unavailable(e) => Self::Unavailable(e),
            UpdateProfileError::Unknown(e) => Self::Unknown(e),
        }
    }
}

impl From<CompleteUploadError> for UploadError {
    fn from(e: CompleteUploadError) -> Self {
        match e {
            CompleteUploadError::QuotaExceeded { quota, .. } => Self::QuotaExceeded {
                max_files: quota.max_files,
                max_bytes: quota.max_bytes,
            },
            CompleteUploadError::Unavailable(e) => Self::Unavailable(e),
            CompleteUploadError::Unknown(e) => Self::Unknown(e),
        }
    }
}

impl From<CreateUploadError> for UploadError {
    fn from(e: CreateUploadError) -> Self {
        match e {
            CreateUploadError::TooManyPending { max } => Self::TooManyPending { max },
            CreateUploadError::QuotaExceeded { quota, .. } => Self::QuotaExceeded {
                max_files: quota.max_files,
                max_bytes: quota.max_bytes,
            },
            CreateUploadError::NoUser => {
                Self::Unknown(anyhow::anyhow!("the user vanished while uploading"))
            }
            CreateUploadError::Unavailable(e) => Self::Unavailable(e),
            CreateUploadError::Unknown(e) => Self::Unknown(e),
        }
    }
}

/// An upload as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadView {
    pub upload: Upload,
    /// A link that reads the object (completed uploads only).
    pub url: Option<String>,
}

/// A new upload and the form that stores its object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedUpload {
    pub upload: Upload,
    pub form: PresignedPost,
}

/// A completed upload, and for an avatar the profile it now adorns.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletedView {
    pub upload: UploadView,
    pub profile: Option<User>,
}

/// The upload flow, over the object store and the upload records.
#[derive(Clone)]
pub struct UploadService {
    uploads: Arc<dyn UploadRepository>,
    store: Arc<dyn ObjectStore>,
    profiles: ProfileService,
    settings: UploadSettings,
}

impl std::fmt::Debug for UploadService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl UploadService {
    pub fn new(
        uploads: Arc<dyn UploadRepository>,
        store: Arc<dyn ObjectStore>,
        profiles: ProfileService,
        settings: UploadSettings,
    ) -> Self {
        Self {
            uploads,
            store,
            profiles,
            settings,
        }
    }

    /// Presigns an upload of `size` bytes of `content_type` for `purpose`,
    /// creating the caller's profile first if needed.
    pub async fn start(
        &self,
        caller: &VerifiedIdentity,
        purpose: UploadPurpose,
        content_type: &str,
        size: u64,
    ) -> Result<StartedUpload, UploadError> {
        purpose.check(content_type, size)?;
        let user = self
            .profiles
            .upsert(caller, &ProfilePatch::default())
            .await?
            .user;
        let id = UploadId::new();
        let now = Utc::now();
        let upload = Upload {
            id,
            user_id: user.id,
            purpose,
            object_key: Upload::object_key_for(user.id, id),
            content_type: content_type.to_owned(),
            size,
            status: UploadStatus::Pending,
            created_at: now,
            expires_at: now + chrono_duration(self.settings.form_ttl),
            completed_at: None,
            replaced_at: None,
        };
        // The store enforces the purpose's limit, not the announced size:
        // a client may recompress before it uploads.
        let form = self.store.presign_post(&PostPolicy {
            key: upload.object_key.clone(),
            content_type: upload.content_type.clone(),
            min_bytes: 1,
            max_bytes: purpose.limits().max_bytes,
            expires_in: self.settings.form_ttl,
        })?;
        self.uploads.create(&upload, &self.settings.quota()).await?;
        tracing::info!(user_id = %user.id, upload_id = %id, purpose = purpose.as_str(), "upload presigned");
        Ok(StartedUpload { upload, form })
    }

    /// Checks that the object of upload `id` arrived as announced and
    /// marks it completed; an avatar becomes the profile's `photo_url`
    /// (a link under `media_base`, e.g. `https://api.example.com/media`,
    /// unless the store has public links). Completing twice is harmless.
    pub async fn complete(
        &self,
        caller: &VerifiedIdentity,
        id: UploadId,
        media_base: &str,
    ) -> Result<CompletedView, UploadError> {
        let user = self.profiles.get(caller).await.map_err(|e| match e {
            crate::GetProfileError::NotFound => UploadError::NotFound,
            crate::GetProfileError::Unavailable(e) => UploadError::Unavailable(e),
            crate::GetProfileError::Unknown(e) => UploadError::Unknown(e),
        })?;
        let upload = self
            .uploads
            .find(user.id, id)
            .await?
            .filter(|u| u.status != UploadStatus::Replaced)
            .ok_or(UploadError::NotFound)?;
        let done = if upload.status == UploadStatus::Completed {
            self.uploads
                .complete(
                    user.id,
                    id,
                    &Completion {
                        size: upload.size,
                        stored_key: upload.object_key.clone(),
                        at: upload.completed_at.unwrap_or_else(Utc::now),
                    },
                    &self.settings.quota(),
                )
                .await?
        } else {
            // The object is copied where no form writes, then checked
            // there: posting the form again (it stays valid for minutes)
            // cannot swap what was checked.
            let stored_key = Upload::stored_key_for(user.id, id);
            if !self.store.copy(&upload.object_key, &stored_key).await? {
                return Err(UploadError::NotUploaded);
            }
            let info = self
                .store
                .head(&stored_key)
                .await?
                .ok_or(UploadError::NotUploaded)?;
            let stored_type = info.content_type.unwrap_or_default();
            let problem = if stored_type != upload.content_type {
                Some(format!(
                    "stored as {stored_type:?}, announced as {:?}",
                    upload.content_type
                ))
            } else {
                upload
                    .purpose
                    .check(&stored_type, info.size)
                    .err()
                    .map(|e| e.to_string())
            };
            if let Some(problem) = problem {
                // What the store let through but the purpose does not
                // allow is not kept.
                self.store.delete(&stored_key).await?;
                self.store.delete(&upload.object_key).await?;
                tracing::warn!(upload_id = %id, %problem, "uploaded object refused");
                return Err(UploadError::Rejected(problem));
            }
            let completion = Completion {
                size: info.size,
                stored_key: stored_key.clone(),
                at: Utc::now(),
            };
            let done = match self
                .uploads
                .complete(user.id, id, &completion, &self.settings.quota())
                .await
            {
                Err(e @ CompleteUploadError::QuotaExceeded { .. }) => {
                    // Not kept: the copy goes; the form's object goes with
                    // the abandoned upload.
                    self.store.delete(&stored_key).await?;
                    tracing::info!(upload_id = %id, size = info.size, "upload over the user's quota");
                    return Err(e.into());
                }
                done => done?,
            };
            // What the form stored is no longer needed (a later post of
            // the same form lands there and is swept with the account).
            if let Err(e) = self.store.delete(&upload.object_key).await {
                tracing::warn!(upload_id = %id, error = %e, "the upload form's object was not deleted");
            }
            done
        }
        .ok_or(UploadError::NotFound)?;
        let size = done.upload.size;
        let mut profile = None;
        if done.upload.purpose == UploadPurpose::Avatar {
            let link = self
                .store
                .public_url(&done.upload.object_key)
                .unwrap_or_else(|| format!("{}/{id}", media_base.trim_end_matches('/')));
            let photo_url = PhotoUrl::parse(&link)
                .map_err(|e| UploadError::Unknown(anyhow::anyhow!("avatar link {link}: {e}")))?;
            let patch = ProfilePatch {
                photo_url: Some(photo_url),
                ..ProfilePatch::default()
            };
            profile = Some(self.profiles.upsert(caller, &patch).await?.user);
        }
        if let Some(old) = &done.replaced {
            tracing::info!(upload_id = %old.id, "avatar replaced; deleted after the grace period");
        }
        tracing::info!(user_id = %user.id, upload_id = %id, size, "upload completed");
        Ok(CompletedView {
            upload: self.view(done.upload)?,
            profile,
        })
    }

    /// A read link for a completed upload.
    pub fn view(&self, upload: Upload) -> Result<UploadView, UploadError> {
        let url = match upload.status {
            UploadStatus::Completed => Some(
                self.store
                    .read_url(&upload.object_key, self.settings.link_ttl)?,
            ),
            UploadStatus::Pending | UploadStatus::Replaced => None,
        };
        Ok(UploadView { upload, url })
    }

    /// The user's uploads (newest first, at most `limit`), with links.
    pub async fn list(
        &self,
        user: domain::UserId,
        limit: u32,
    ) -> Result<Vec<UploadView>, UploadError> {
        self.uploads
            .list(user, limit)
            .await?
            .into_iter()
            .map(|u| self.view(u))
            .collect()
    }

    /// A fresh read link for the avatar `id` (its public link, `/media/<id>`):
    /// `None` unless it is a completed or recently replaced avatar.
    pub async fn avatar_link(&self, id: UploadId) -> Result<Option<String>, UploadError> {
        let Some(upload) = self.uploads.find_any(id).await? else {
            return Ok(None);
        };
        if upload.purpose != UploadPurpose::Avatar || upload.status == UploadStatus::Pending {
            return Ok(None);
        }
        Ok(Some(
            self.store
                .read_url(&upload.object_key, self.settings.link_ttl)?,
        ))
    }

    pub fn link_ttl(&self) -> Duration {
        self.settings.link_ttl
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// `uploads:cleanup`: deletes abandoned uploads and replaced avatars
/// (their objects, then their records). Periodic; no payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanUpUploadsJob {}

impl Job for CleanUpUploadsJob {
    const KIND: &'static str = "uploads:cleanup";
    const QUEUE: &'static str = "default";
    const VERSION: u16 = 1;
}

/// The handler of [`CleanUpUploadsJob`].
#[derive(Clone)]
pub struct CleanUpUploads {
    uploads: Arc<dyn UploadRepository>,
    store: Arc<dyn ObjectStore>,
    settings: UploadSettings,
}

impl std::fmt::Debug for CleanUpUploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CleanUpUploads").finish_non_exhaustive()
    }
}

/// At most this many uploads per run (the next run takes the rest).
const CLEANUP_BATCH: u32 = 500;

impl CleanUpUploads {
    pub fn new(
        uploads: Arc<dyn UploadRepository>,
        store: Arc<dyn ObjectStore>,
        settings: UploadSettings,
    ) -> Self {
        Self {
            uploads,
            store,
            settings,
        }
    }

    /// Deletes what is stale at `now`; returns how many uploads went.
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<usize, UploadError> {
        let stale = self
            .uploads
            .stale(
                now - chrono_duration(self.settings.abandoned_after),
                now - chrono_duration(self.settings.replaced_grace),
                CLEANUP_BATCH,
            )
            .await?;
        for upload in &stale {
            // The object first: a record without an object is harmless,
            // an object without a record would never be found again.
            self.store.delete(&upload.object_key).await?;
            self.uploads.remove(upload.id).await?;
        }
        if !stale.is_empty() {
            tracing::info!(deleted = stale.len(), "stale uploads deleted");
        }
        Ok(stale.len())
    }
}

#[async_trait]
impl HandleJob for CleanUpUploads {
    type Job = CleanUpUploadsJob;

    async fn run(&self, _: CleanUpUploadsJob, _ctx: &JobContext) -> Result<(), JobFailure> {
        self.run_once(Utc::now())
            .await
            .map(|_| ())
            .map_err(JobFailure::retry)
    }
}

#[cfg(test)]
mod tests;

//! Storage of users and their push tokens.
//!
//! Writes that change a user also append the matching domain event to the
//! transactional outbox, in the same transaction: an implementation MUST NOT
//! commit a user change without its event, nor an event without its change.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{
    Email, FirebaseUid, KeysetPage, Platform, ProfileDefaults, ProfilePatch, PushToken,
    PushTokenRecord, User,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertOutcome {
    /// No user had this uid; one was inserted and `UserCreated` appended.
    Created,
    /// The user existed and the patch changed it; `ProfileUpdated` appended.
    Updated,
    /// The user existed and the patch changed nothing; no event.
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpsertedProfile {
    pub user: User,
    pub outcome: UpsertOutcome,
}

#[derive(Debug, Error)]
pub enum FindUserError {
    /// The store could not be reached or timed out; retrying may succeed.
    #[error("user store unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

#[derive(Debug, Error)]
pub enum UpsertProfileError {
    /// The uid's account was deleted after the token was issued: the token
    /// no longer proves the uid, and no user is created from it.
    #[error("the account was deleted after this token was issued")]
    AccountDeleted,
    /// The store could not be reached or timed out, or the row kept changing
    /// under the upsert (a concurrent delete) past its retries.
    #[error("user store unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

#[derive(Debug, Error)]
pub enum DeleteUserError {
    #[error("no user with this uid")]
    NotFound,
    #[error("user store unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

/// Users by their Firebase uid.
#[async_trait]
pub trait UserRepository: Send + Sync + 'static {
    /// The user with this uid.
    ///
    /// MUST return `Ok(None)` when there is none, `Unavailable` when the store
    /// cannot be reached, `Unknown` for anything else.
    async fn find_by_uid(&self, uid: &FirebaseUid) -> Result<Option<User>, FindUserError>;

    /// Creates the user with `patch` (missing fields taken from `defaults`) if
    /// no user has this uid, else applies `patch` (`defaults` are ignored).
    ///
    /// MUST be race-free: however many concurrent calls arrive for a new uid,
    /// exactly one returns `Created` and exactly one `UserCreated` event is
    /// appended, carrying `defaults.verified_email`. `Updated` appends
    /// `ProfileUpdated`; `Unchanged` appends no profile event and leaves
    /// `updated_at` alone. Whatever the outcome, when `defaults.verified_email`
    /// differs from the address last verified for this user, it is stored
    /// and `EmailVerified` appended (once, however many calls race). MUST
    /// return `Unavailable` when the store cannot be reached.
    async fn upsert_profile(
        &self,
        uid: &FirebaseUid,
        patch: &ProfilePatch,
        defaults: &ProfileDefaults,
    ) -> Result<UpsertedProfile, UpsertProfileError>;

    /// Deletes the user and (cascading) their push tokens, appending
    /// `UserDeleted`, and records when (the uid's tombstone, in the same
    /// transaction): from then on, no token issued before it proves the
    /// uid, and none creates the user again. Returns the user as it was.
    ///
    /// MUST return `NotFound` when no user has this uid (and append nothing).
    async fn delete_by_uid(&self, uid: &FirebaseUid) -> Result<User, DeleteUserError>;

    /// The address the identity provider last vouched for (the only one
    /// mail goes to), of the uid's user; `None` without a user or such an
    /// address. Events carry no address: consumers read it here when they
    /// act.
    async fn verified_email(&self, uid: &FirebaseUid) -> Result<Option<Email>, FindUserError>;

    /// The events the outbox holds about the uid (its accounts', a
    /// deleted one's too), oldest first, at most `limit`: what the event
    /// log stores about a user, for their data export.
    async fn events_about(
        &self,
        uid: &FirebaseUid,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, FindUserError>;

    /// When the uid's account was last deleted (its tombstone), if it was
    /// within the retention of [`UserRepository::forget_deletions`].
    /// `upsert_profile` (and every write that creates a user) MUST NOT
    /// create a user from defaults whose `issued_at` is not after it.
    async fn deleted_at(&self, uid: &FirebaseUid) -> Result<Option<DateTime<Utc>>, FindUserError>;

    /// Drops tombstones older than `older_than` (no token issued before
    /// them is still valid by then). Returns how many.
    async fn forget_deletions(&self, older_than: std::time::Duration)
    -> Result<u64, FindUserError>;
}

/// An event as the outbox keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub event: domain::RawEvent,
    /// When the relay published it; `None` while it waits.
    pub published_at: Option<DateTime<Utc>>,
}

/// The position after which the next page of a user's push tokens starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushTokenKey {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredPushToken {
    pub record: PushTokenRecord,
    /// The uid had no user row; one was created (and `UserCreated` appended).
    pub user_created: bool,
}

#[derive(Debug, Error)]
pub enum RegisterPushTokenError {
    /// The uid's account was deleted after the token was issued.
    #[error("the account was deleted after this token was issued")]
    AccountDeleted,
    #[error("push token store unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

#[derive(Debug, Error)]
pub enum UnregisterPushTokenError {
    /// The token is not registered to this user (it may be someone else's).
    #[error("push token not registered for this user")]
    NotFound,
    #[error("push token store unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

#[derive(Debug, Error)]
pub enum ListPushTokensError {
    #[error("push token store unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

#[derive(Debug, Error)]
pub enum DeletePushTokenError {
    #[error("push token store unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

/// FCM registration tokens by user.
#[async_trait]
pub trait PushTokenRepository: Send + Sync + 'static {
    /// Registers `token` for the user with `uid`, creating the user (from
    /// `defaults`, appending `UserCreated` once) when the uid has no row yet,
    /// and announcing a newly verified address as `upsert_profile` does.
    ///
    /// MUST be idempotent: the same token again only bumps `last_seen_at`
    /// (and its platform); a token registered to another user moves to this
    /// one. `created_at` of an existing token is kept.
    async fn register(
        &self,
        uid: &FirebaseUid,
        token: &PushToken,
        platform: Platform,
        defaults: &ProfileDefaults,
    ) -> Result<RegisteredPushToken, RegisterPushTokenError>;

    /// Removes `token` from the user with `uid`.
    ///
    /// MUST return `NotFound` when the token is not registered to this user,
    /// including when it belongs to another user (which keeps it).
    async fn unregister(
        &self,
        uid: &FirebaseUid,
        token: &PushToken,
    ) -> Result<(), UnregisterPushTokenError>;

    /// The user's tokens, oldest first, `limit` at most, starting after
    /// `after`. A uid with no user has no tokens (an empty page, not an error).
    async fn list_for_user(
        &self,
        uid: &FirebaseUid,
        after: Option<PushTokenKey>,
        limit: u32,
    ) -> Result<KeysetPage<PushTokenRecord, PushTokenKey>, ListPushTokensError>;

    /// Deletes `token` whoever holds it (FCM said it is no longer valid).
    /// Returns whether a row was deleted.
    async fn delete_token(&self, token: &PushToken) -> Result<bool, DeletePushTokenError>;
}

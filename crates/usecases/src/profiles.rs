//! Profiles: read, upsert (creating the user on first sight) and delete.

use crate::messages::PROFILE_UPDATED;
use domain::{ProfilePatch, User, VerifiedIdentity};
use ports::{
    Audience, DeleteUserError, Disconnect, FindUserError, Notification, Notifier, UpsertOutcome,
    UpsertProfileError, UpsertedProfile, UserRepository,
};
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum GetProfileError {
    /// The caller is authenticated but has no profile yet.
    #[error("no profile for this user")]
    NotFound,
    #[error("profile store unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

impl From<FindUserError> for GetProfileError {
    fn from(e: FindUserError) -> Self {
        match e {
            FindUserError::Unavailable(e) => GetProfileError::Unavailable(e),
            FindUserError::Unknown(e) => GetProfileError::Unknown(e),
        }
    }
}

#[derive(Debug, Error)]
pub enum UpdateProfileError {
    /// The caller's token was issued before their account was deleted.
    #[error("the account was deleted after this token was issued")]
    AccountDeleted,
    #[error("profile store unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

impl From<UpsertProfileError> for UpdateProfileError {
    fn from(e: UpsertProfileError) -> Self {
        match e {
            UpsertProfileError::AccountDeleted => UpdateProfileError::AccountDeleted,
            UpsertProfileError::Unavailable(e) => UpdateProfileError::Unavailable(e),
            UpsertProfileError::Unknown(e) => UpdateProfileError::Unknown(e),
        }
    }
}

#[derive(Debug, Error)]
pub enum DeleteAccountError {
    #[error("no profile for this user")]
    NotFound,
    #[error("profile store unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

impl From<DeleteUserError> for DeleteAccountError {
    fn from(e: DeleteUserError) -> Self {
        match e {
            DeleteUserError::NotFound => DeleteAccountError::NotFound,
            DeleteUserError::Unavailable(e) => DeleteAccountError::Unavailable(e),
            DeleteUserError::Unknown(e) => DeleteAccountError::Unknown(e),
        }
    }
}

/// The profile flows. Events (`UserCreated`, `ProfileUpdated`,
/// `UserDeleted`) are appended by the repository in the same transaction as
/// the change, so nothing here can lose one.
#[derive(Clone)]
pub struct ProfileService {
    users: Arc<dyn UserRepository>,
    notifier: Option<Arc<dyn Notifier>>,
}

impl std::fmt::Debug for ProfileService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileService").finish_non_exhaustive()
    }
}

impl ProfileService {
    pub fn new(users: Arc<dyn UserRepository>) -> Self {
        Self {
            users,
            notifier: None,
        }
    }

    /// Tells the user's open sockets (their other devices) about changes.
    pub fn with_notifier(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// Whether the caller's token was issued before their account was
    /// deleted: it proves nothing then, however long it still runs.
    pub async fn token_revoked(&self, caller: &VerifiedIdentity) -> Result<bool, GetProfileError> {
        Ok(self
            .users
            .deleted_at(&caller.uid)
            .await?
            .is_some_and(|at| caller.issued_before(at)))
    }

    /// The caller's profile.
    pub async fn get(&self, caller: &VerifiedIdentity) -> Result<User, GetProfileError> {
        self.users
            .find_by_uid(&caller.uid)
            .await?
            .ok_or(GetProfileError::NotFound)
    }

    /// Applies `patch` to the caller's profile, creating it first if needed;
    /// a new profile takes what the patch leaves out from the token's claims.
    pub async fn upsert(
        &self,
        caller: &VerifiedIdentity,
        patch: &ProfilePatch,
    ) -> Result<UpsertedProfile, UpdateProfileError> {
        let upserted = self
            .users
            .upsert_profile(&caller.uid, patch, &caller.profile_defaults())
            .await?;
        tracing::info!(user_id = %upserted.user.id, outcome = ?upserted.outcome, "profile upserted");
        if upserted.outcome == UpsertOutcome::Updated
            && let Some(notifier) = &self.notifier
        {
            let data = serde_json::to_value(&upserted.user).unwrap_or_default();
            let audience = Audience::User(caller.uid.clone());
            // Realtime is best effort: the change is committed either way.
            if let Err(e) = notifier
                .notify(&audience, &Notification::new(PROFILE_UPDATED, data))
                .await
            {
                tracing::warn!(user_id = %upserted.user.id, error = %e, "profile.updated not delivered to every instance");
            }
        }
        Ok(upserted)
    }

    /// Deletes the caller's account and push tokens, and closes the user's
    /// sockets on every instance (4003 `account deleted`).
    pub async fn delete(&self, caller: &VerifiedIdentity) -> Result<(), DeleteAccountError> {
        let user = self.users.delete_by_uid(&caller.uid).await?;
        tracing::info!(user_id = %user.id, "account deleted");
        if let Some(notifier) = &self.notifier {
            let audience = Audience::User(caller.uid.clone());
            // Best effort, like every realtime message: the deletion is
            // committed either way; local sockets are closed regardless.
            if let Err(e) = notifier
                .disconnect(&audience, &Disconnect::account_deleted())
                .await
            {
                tracing::warn!(user_id = %user.id, error = %e, "deleted account's sockets not closed on every instance");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{DisplayName, FirebaseUid};
    use ports::UpsertOutcome;
    use ports_testing::InMemoryStore;

    fn caller(uid: &str) -> VerifiedIdentity {
        let mut id = VerifiedIdentity::new(FirebaseUid::parse(uid).unwrap());
        id.email = Some("claims@example.com".into());
        id.name = Some("Claim Name".into());
        id
    }

    #[tokio::test]
    async fn a_new_profile_takes_missing_fields_from_the_token() {
        let store = Arc::new(InMemoryStore::new());
        let svc = ProfileService::new(store.clone());
        let patch = ProfilePatch {
            display_name: Some(DisplayName::parse("Chosen").unwrap()),
            ..ProfilePatch::default()
        };
        let up = svc.upsert(&caller("u1"), &patch).await.unwrap();
        assert_eq!(up.outcome, UpsertOutcome::Created);
        assert_eq!(up.user.display_name.unwrap().as_str(), "Chosen");
        assert_eq!(up.user.email.unwrap().as_str(), "claims@example.com");
    }

    #[tokio::test]
    async fn a_changed_profile_is_pushed_to_the_users_sockets() {
        use ports_testing::RecordingNotifier;
        let notifier = Arc::new(RecordingNotifier::new());
        let svc =
            ProfileService::new(Arc::new(InMemoryStore::new())).with_notifier(notifier.clone());
        svc.upsert(&caller("u3"), &ProfilePatch::default())
            .await
            .unwrap();
        assert!(notifier.sent().is_empty(), "creating is not an update");
        let patch = ProfilePatch {
            display_name: Some(DisplayName::parse("New").unwrap()),
            ..ProfilePatch::default()
        };
        svc.upsert(&caller("u3"), &patch).await.unwrap();
        svc.upsert(&caller("u3"), &patch).await.unwrap();
        let sent = notifier.sent();
        assert_eq!(sent.len(), 1, "an unchanged profile is not pushed");
        assert_eq!(sent[0].0, Audience::User(FirebaseUid::parse("u3").unwrap()));
        assert_eq!(sent[0].1.kind, PROFILE_UPDATED);
        assert_eq!(sent[0].1.data["display_name"], "New");
    }

    #[tokio::test]
    async fn get_and_delete_say_not_found_for_strangers() {
        let svc = ProfileService::new(Arc::new(InMemoryStore::new()));
        assert!(matches!(
            svc.get(&caller("nobody")).await,
            Err(GetProfileError::NotFound)
        ));
        assert!(matches!(
            svc.delete(&caller("nobody")).await,
            Err(DeleteAccountError::NotFound)
        ));
    }

    #[tokio::test]
    async fn deleting_the_account_closes_its_sockets_everywhere() {
        use ports_testing::RecordingNotifier;
        let notifier = Arc::new(RecordingNotifier::new());
        let svc =
            ProfileService::new(Arc::new(InMemoryStore::new())).with_notifier(notifier.clone());
        svc.upsert(&caller("gone"), &ProfilePatch::default())
            .await
            .unwrap();
        svc.delete(&caller("gone")).await.unwrap();
        assert_eq!(
            notifier.disconnected(),
            [(
                Audience::User(FirebaseUid::parse("gone").unwrap()),
                Disconnect::account_deleted()
            )]
        );
    }

    #[tokio::test]
    async fn delete_removes_the_profile() {
        let store = Arc::new(InMemoryStore::new());
        let svc = ProfileService::new(store.clone());
        svc.upsert(&caller("u2"), &ProfilePatch::default())
            .await
            .unwrap();
        svc.delete(&caller("u2")).await.unwrap();
        assert!(matches!(
            svc.get(&caller("u2")).await,
            Err(GetProfileError::NotFound)
        ));
        let types: Vec<_> = store
            .events()
            .iter()
            .map(|e| e.event.event_type())
            .collect();
        assert_eq!(types, ["user.created", "user.deleted"]);
    }
}

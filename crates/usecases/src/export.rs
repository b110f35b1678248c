//! The user's own data, all of it (`GET /api/v1/me/export`): what the
//! service stores about the caller, composed from each store's port.

use crate::push::MAX_DEVICES_PER_USER;
use crate::uploads::{UploadError, UploadService, UploadView};

/// Uploads in one export: every one a user can have (pending ones are
/// bounded, completed ones are what the app keeps; an app that lets users
/// keep more pages through them itself).
const MAX_EXPORTED_UPLOADS: u32 = 10_000;
use chrono::{DateTime, Utc};
use domain::{Email, User, VerifiedIdentity};
use ports::{
    CancelJobsError, FindUserError, JobQueue, ListPushTokensError, PushTokenRepository,
    UserRepository, WelcomeLedger, WelcomeLedgerError, WelcomeRecord,
};
use std::sync::Arc;
use thiserror::Error;

/// A registered device, as exported: the token's fingerprint, never the
/// token (a push token is a credential for the device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedDevice {
    pub fingerprint: String,
    pub platform: &'static str,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

/// An event the outbox keeps about the user (identifiers only).
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedEvent {
    pub id: uuid::Uuid,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub data: serde_json::Value,
}

/// A job the queue holds for the user, with its data (a push token in it
/// as its fingerprint, as everywhere).
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedJob {
    pub id: String,
    pub queue: String,
    pub kind: String,
    pub state: String,
    pub data: serde_json::Value,
}

/// Events in one export: every one a user's actions append stays far
/// below this within the outbox's retention.
const MAX_EXPORTED_EVENTS: u32 = 10_000;

/// Everything stored about one user.
#[derive(Debug, Clone, PartialEq)]
pub struct UserExport {
    pub profile: User,
    /// The address the identity provider last vouched for (the only one
    /// mail goes to), kept beside the profile.
    pub verified_email: Option<Email>,
    /// The events about the user the outbox still keeps.
    pub events: Vec<ExportedEvent>,
    /// The user's jobs the queue holds (waiting, running or dead).
    pub jobs: Vec<ExportedJob>,
    pub devices: Vec<ExportedDevice>,
    /// The welcome mail, if one was claimed (its address is not kept).
    pub welcome_mail: Option<WelcomeRecord>,
    /// Every upload, with read links for the completed ones.
    pub uploads: Vec<UploadView>,
    pub exported_at: DateTime<Utc>,
}

#[derive(Debug, Error)]
pub enum ExportError {
    #[error("no profile")]
    NotFound,
    #[error("a store is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

impl From<FindUserError> for ExportError {
    fn from(e: FindUserError) -> Self {
        match e {
            FindUserError::Unavailable(e) => Self::Unavailable(e),
            FindUserError::Unknown(e) => Self::Unknown(e),
        }
    }
}

impl From<ListPushTokensError> for ExportError {
    fn from(e: ListPushTokensError) -> Self {
        match e {
            ListPushTokensError::Unavailable(e) => Self::Unavailable(e),
            ListPushTokensError::Unknown(e) => Self::Unknown(e),
        }
    }
}

impl From<CancelJobsError> for ExportError {
    fn from(e: CancelJobsError) -> Self {
        match e {
            CancelJobsError::Unavailable(e) => Self::Unavailable(e),
            CancelJobsError::Unknown(e) => Self::Unknown(e),
        }
    }
}

/// A job's payload as exported: a push token (a credential for the
/// device) by its fingerprint.
fn shown(mut payload: serde_json::Value) -> serde_json::Value {
    if let Some(token) = payload.get_mut("token")
        && let Some(raw) = token.as_str()
    {
        *token = match domain::PushToken::parse(raw) {
            Ok(t) => serde_json::json!({"fingerprint": t.fingerprint()}),
            Err(_) => serde_json::Value::Null,
        };
    }
    payload
}

impl From<WelcomeLedgerError> for ExportError {
    fn from(e: WelcomeLedgerError) -> Self {
        match e {
            WelcomeLedgerError::Unavailable(e) => Self::Unavailable(e),
            WelcomeLedgerError::Unknown(e) => Self::Unknown(e),
        }
    }
}

/// Exports a user's data.
#[derive(Clone)]
pub struct UserData {
    users: Arc<dyn UserRepository>,
    tokens: Arc<dyn PushTokenRepository>,
    ledger: Arc<dyn WelcomeLedger>,
    uploads: UploadService,
    jobs: Arc<dyn JobQueue>,
}

impl std::fmt::Debug for UserData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserData").finish_non_exhaustive()
    }
}

impl UserData {
    pub fn new(
        users: Arc<dyn UserRepository>,
        tokens: Arc<dyn PushTokenRepository>,
        ledger: Arc<dyn WelcomeLedger>,
        uploads: UploadService,
        jobs: Arc<dyn JobQueue>,
    ) -> Self {
        Self {
            users,
            tokens,
            ledger,
            uploads,
            jobs,
        }
    }

    /// The caller's data; `NotFound` before their profile exists.
    pub async fn export(&self, caller: &VerifiedIdentity) -> Result<UserExport, ExportError> {
        let profile = self
            .users
            .find_by_uid(&caller.uid)
            .await?
            .ok_or(ExportError::NotFound)?;
        let mut devices = Vec::new();
        let mut after = None;
        loop {
            let page = self.tokens.list_for_user(&caller.uid, after, 100).await?;
            devices.extend(page.items.into_iter().map(|r| ExportedDevice {
                fingerprint: r.token.fingerprint(),
                platform: r.platform.as_str(),
                created_at: r.created_at,
                last_seen_at: r.last_seen_at,
            }));
            match page.next {
                Some(next) if devices.len() < MAX_DEVICES_PER_USER => after = Some(next),
                _ => break,
            }
        }
        let welcome_mail = self.ledger.record(&caller.uid).await?;
        let uploads = self
            .uploads
            .list(profile.id, MAX_EXPORTED_UPLOADS)
            .await
            .map_err(|e| match e {
                UploadError::Unavailable(e) => ExportError::Unavailable(e),
                other => ExportError::Unknown(other.into()),
            })?;
        let verified_email = self.users.verified_email(&caller.uid).await?;
        let events = self
            .users
            .events_about(&caller.uid, MAX_EXPORTED_EVENTS)
            .await?
            .into_iter()
            .map(|e| ExportedEvent {
                id: e.event.id,
                event_type: e.event.event_type,
                occurred_at: e.event.occurred_at,
                published_at: e.published_at,
                data: e.event.payload,
            })
            .collect();
        let jobs = self
            .jobs
            .owned_jobs(caller.uid.as_str())
            .await?
            .into_iter()
            .map(|j| ExportedJob {
                id: j.id,
                queue: j.queue,
                kind: j.kind,
                state: j.state,
                data: shown(j.payload),
            })
            .collect();
        tracing::info!(user_id = %profile.id, devices = devices.len(), uploads = uploads.len(), "user data exported");
        Ok(UserExport {
            profile,
            verified_email,
            events,
            jobs,
            devices,
            welcome_mail,
            uploads,
            exported_at: Utc::now(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ports_testing::{InMemoryStore, InMemoryWelcomeLedger};

    #[tokio::test]
    async fn an_export_holds_the_profile_the_devices_as_fingerprints_and_the_welcome_mail() {
        let store = Arc::new(InMemoryStore::new());
        let ledger = Arc::new(InMemoryWelcomeLedger::new());
        let objects = Arc::new(ports_testing::InMemoryObjectStore::new());
        let uploads = UploadService::new(
            store.clone(),
            objects.clone(),
            crate::ProfileService::new(store.clone()),
            crate::UploadSettings::default(),
        );
        let jobs = Arc::new(ports_testing::RecordingJobQueue::new());
        let data = UserData::new(
            store.clone(),
            store.clone(),
            ledger.clone(),
            uploads.clone(),
            jobs.clone(),
        );
        let caller = VerifiedIdentity::new(domain::FirebaseUid::parse("ada").unwrap());
        assert!(matches!(
            data.export(&caller).await,
            Err(ExportError::NotFound)
        ));
        let token = domain::PushToken::parse("device-token-of-ada").unwrap();
        ports::PushTokenRepository::register(
            store.as_ref(),
            &caller.uid,
            &token,
            domain::Platform::Ios,
            &domain::ProfileDefaults::default(),
        )
        .await
        .unwrap();
        let export = data.export(&caller).await.unwrap();
        assert_eq!(export.profile.uid, caller.uid);
        assert_eq!(export.devices.len(), 1);
        assert_eq!(export.devices[0].fingerprint, token.fingerprint());
        assert_eq!(export.devices[0].platform, "ios");
        assert_eq!(export.welcome_mail, None);
        assert!(export.uploads.is_empty());
        let types: Vec<&str> = export
            .events
            .iter()
            .map(|e| e.event_type.as_str())
            .collect();
        assert_eq!(types, ["user.created"]);
        assert!(export.jobs.is_empty());
        ports::JobQueue::enqueue(
            jobs.as_ref(),
            ports::NewJob::new(
                "push:send-device",
                1,
                &serde_json::json!({"uid": "ada", "token": token.as_str()}),
            )
            .unwrap()
            .owned_by("ada"),
        )
        .await
        .unwrap();
        let export = data.export(&caller).await.unwrap();
        assert_eq!(export.jobs.len(), 1);
        assert_eq!(export.jobs[0].kind, "push:send-device");
        assert_eq!(
            export.jobs[0].data["token"]["fingerprint"],
            token.fingerprint(),
            "the device's token only as its fingerprint"
        );
        assert!(!export.jobs[0].data.to_string().contains(token.as_str()));

        let started = uploads
            .start(&caller, domain::UploadPurpose::Avatar, "image/png", 3)
            .await
            .unwrap();
        use ports_testing::ObjectClient as _;
        assert_eq!(objects.post_form(&started.form, vec![1, 2, 3]).await, 204);
        uploads
            .complete(&caller, started.upload.id, "https://api.example.com/media")
            .await
            .unwrap();
        let export = data.export(&caller).await.unwrap();
        assert_eq!(export.uploads.len(), 1);
        assert_eq!(export.uploads[0].upload.id, started.upload.id);
        assert!(export.uploads[0].url.is_some(), "with a link to the file");
    }
}

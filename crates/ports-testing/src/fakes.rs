//! Small recording fakes for the ports whose real adapters talk to a network.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{FirebaseUid, Mail, RawEvent, VerifiedIdentity};
use ports::auth::{InvalidToken, TokenVerifier, VerifyTokenError};
use ports::clock::Clock;
use ports::events::{EventPublisher, PublishEventError};
use ports::jobs::{
    CancelJobsError, CancelledJobs, EnqueueJobError, JobId, JobQueue, NewJob, OwnedJob,
};
use ports::mail::{Mailer, SendMailError};
use ports::realtime::{Audience, Disconnect, Notification, Notifier, NotifyError};
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Accepts exactly the tokens it was given, as the identities it was given.
/// Any other token is `Invalid(BadSignature)`. Like the real verifier, a
/// token it has accepted once is found by `verify_cached` afterwards;
/// `verifications` counts the calls to `verify` (the expensive path).
#[derive(Debug, Default)]
pub struct FakeTokenVerifier {
    tokens: Mutex<HashMap<String, VerifiedIdentity>>,
    proven: Mutex<HashMap<String, VerifiedIdentity>>,
    verifications: std::sync::atomic::AtomicU64,
}

impl FakeTokenVerifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `token` valid for `identity` (issued now, unless it says when).
    pub fn allow(&self, token: &str, mut identity: VerifiedIdentity) {
        identity.issued_at = identity
            .issued_at
            .or_else(|| DateTime::from_timestamp(Utc::now().timestamp(), 0));
        lock(&self.tokens).insert(token.to_owned(), identity);
    }

    /// Makes `token` valid for a bare identity with `uid`; returns the token.
    pub fn allow_uid(&self, token: &str, uid: &str) -> String {
        let uid = FirebaseUid::parse(uid).unwrap_or_else(|e| panic!("bad test uid {uid:?}: {e}"));
        self.allow(token, VerifiedIdentity::new(uid));
        token.to_owned()
    }

    /// How many times `verify` ran.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait]
impl TokenVerifier for FakeTokenVerifier {
    async fn verify(&self, token: &str) -> Result<VerifiedIdentity, VerifyTokenError> {
        self.verifications
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if token.is_empty() {
            return Err(InvalidToken::Missing.into());
        }
        let identity = lock(&self.tokens)
            .get(token)
            .cloned()
            .ok_or(VerifyTokenError::Invalid(InvalidToken::BadSignature))?;
        lock(&self.proven).insert(token.to_owned(), identity.clone());
        Ok(identity)
    }

    fn verify_cached(&self, token: &str) -> Option<VerifiedIdentity> {
        lock(&self.proven).get(token).cloned()
    }
}

/// Records enqueued jobs and enforces unique keys (never releases them).
#[derive(Debug, Default)]
pub struct RecordingJobQueue {
    jobs: Mutex<Vec<(JobId, NewJob)>>,
    down: Mutex<bool>,
}

impl RecordingJobQueue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn jobs(&self) -> Vec<(JobId, NewJob)> {
        lock(&self.jobs).clone()
    }

    /// While down, every enqueue fails with `Unavailable`.
    pub fn set_down(&self, down: bool) {
        *lock(&self.down) = down;
    }
}

#[async_trait]
impl JobQueue for RecordingJobQueue {
    async fn enqueue(&self, job: NewJob) -> Result<JobId, EnqueueJobError> {
        if *lock(&self.down) {
            return Err(EnqueueJobError::Unavailable(anyhow::anyhow!(
                "queue is down"
            )));
        }
        if job.kind.is_empty() || job.queue.is_empty() {
            return Err(EnqueueJobError::Invalid("empty kind or queue".into()));
        }
        let mut jobs = lock(&self.jobs);
        if let Some(u) = &job.unique
            && jobs
                .iter()
                .any(|(_, j)| j.unique.as_ref().is_some_and(|k| k.key == u.key))
        {
            return Err(EnqueueJobError::Duplicate { key: u.key.clone() });
        }
        let id = JobId::new();
        jobs.push((id, job));
        Ok(id)
    }

    async fn cancel_owned(&self, owner: &str) -> Result<CancelledJobs, CancelJobsError> {
        if *lock(&self.down) {
            return Err(CancelJobsError::Unavailable(anyhow::anyhow!(
                "queue is down"
            )));
        }
        let mut jobs = lock(&self.jobs);
        let before = jobs.len();
        jobs.retain(|(_, j)| j.owner.as_deref() != Some(owner));
        Ok(CancelledJobs {
            cancelled: (before - jobs.len()) as u64,
            running: 0,
        })
    }

    async fn owned_jobs(&self, owner: &str) -> Result<Vec<OwnedJob>, CancelJobsError> {
        if *lock(&self.down) {
            return Err(CancelJobsError::Unavailable(anyhow::anyhow!(
                "queue is down"
            )));
        }
        Ok(lock(&self.jobs)
            .iter()
            .filter(|(_, j)| j.owner.as_deref() == Some(owner))
            .map(|(id, j)| OwnedJob {
                id: id.to_string(),
                queue: j.queue.clone(),
                kind: j.kind.clone(),
                state: if j.run_at.is_some() {
                    "scheduled"
                } else {
                    "pending"
                }
                .into(),
                payload: j.payload.clone(),
            })
            .collect())
    }
}

/// What a [`RecordingMailer`] answers next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailOutcome {
    Accept,
    Unavailable(String),
    Reject(String),
}

/// Records every mail accepted; answers from a script first, then accepts.
#[derive(Debug, Default)]
pub struct RecordingMailer {
    sent: Mutex<Vec<Mail>>,
    script: Mutex<VecDeque<MailOutcome>>,
}

impl RecordingMailer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues outcomes for the next sends.
    pub fn script(&self, outcomes: impl IntoIterator<Item = MailOutcome>) {
        lock(&self.script).extend(outcomes);
    }

    pub fn sent(&self) -> Vec<Mail> {
        lock(&self.sent).clone()
    }
}

#[async_trait]
impl Mailer for RecordingMailer {
    async fn send(&self, mail: &Mail) -> Result<(), SendMailError> {
        match lock(&self.script)
            .pop_front()
            .unwrap_or(MailOutcome::Accept)
        {
            MailOutcome::Accept => {
                lock(&self.sent).push(mail.clone());
                Ok(())
            }
            MailOutcome::Unavailable(reason) => Err(SendMailError::Unavailable { reason }),
            MailOutcome::Reject(reply) => Err(SendMailError::Rejected { reply }),
        }
    }
}

/// Records every notification.
#[derive(Debug, Default)]
pub struct RecordingNotifier {
    sent: Mutex<Vec<(Audience, Notification)>>,
    disconnected: Mutex<Vec<(Audience, Disconnect)>>,
    forgotten: Mutex<Vec<FirebaseUid>>,
}

impl RecordingNotifier {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn sent(&self) -> Vec<(Audience, Notification)> {
        lock(&self.sent).clone()
    }

    pub fn disconnected(&self) -> Vec<(Audience, Disconnect)> {
        lock(&self.disconnected).clone()
    }

    /// The users whose realtime history was dropped.
    pub fn forgotten(&self) -> Vec<FirebaseUid> {
        lock(&self.forgotten).clone()
    }
}

#[async_trait]
impl Notifier for RecordingNotifier {
    async fn notify(
        &self,
        audience: &Audience,
        notification: &Notification,
    ) -> Result<(), NotifyError> {
        lock(&self.sent).push((audience.clone(), notification.clone()));
        Ok(())
    }

    async fn disconnect(
        &self,
        audience: &Audience,
        reason: &Disconnect,
    ) -> Result<(), NotifyError> {
        lock(&self.disconnected).push((audience.clone(), reason.clone()));
        Ok(())
    }

    async fn forget_user(&self, uid: &FirebaseUid) -> Result<(), NotifyError> {
        lock(&self.forgotten).push(uid.clone());
        Ok(())
    }
}

/// Records published events; can be switched "down".
#[derive(Debug, Default)]
pub struct RecordingPublisher {
    published: Mutex<Vec<RawEvent>>,
    down: Mutex<bool>,
    /// How long each publish takes (a slow bus).
    delay: Mutex<std::time::Duration>,
    /// Each topic's fence: the latest leader term that published to it.
    fences: Mutex<std::collections::HashMap<String, ports::LeaderTerm>>,
    /// `confirm` fails (no replica acknowledges).
    unconfirmed: Mutex<bool>,
    /// Successful `confirm` calls.
    confirms: Mutex<usize>,
}

impl RecordingPublisher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything published, in order, as carried.
    pub fn published(&self) -> Vec<RawEvent> {
        lock(&self.published).clone()
    }

    /// Makes every publish take `delay` (before it is recorded).
    pub fn set_delay(&self, delay: std::time::Duration) {
        *lock(&self.delay) = delay;
    }

    pub fn set_down(&self, down: bool) {
        *lock(&self.down) = down;
    }

    /// Makes `confirm` fail, as a bus whose replicas do not acknowledge.
    pub fn set_unconfirmed(&self, unconfirmed: bool) {
        *lock(&self.unconfirmed) = unconfirmed;
    }

    /// How many times `confirm` succeeded.
    pub fn confirms(&self) -> usize {
        *lock(&self.confirms)
    }
}

impl RecordingPublisher {
    /// Waits the delay, then appends at once (checking and raising the
    /// topic's fence for a leader's publish), as one Redis script would.
    async fn append(
        &self,
        event: &RawEvent,
        term: Option<ports::LeaderTerm>,
    ) -> Result<String, PublishEventError> {
        let delay = *lock(&self.delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if *lock(&self.down) {
            return Err(PublishEventError::Unavailable(anyhow::anyhow!(
                "bus is down"
            )));
        }
        let mut fences = lock(&self.fences);
        if let Some(term) = term {
            let fence = fences.entry(event.topic.clone()).or_insert(term);
            if *fence > term {
                return Err(PublishEventError::Fenced { by: *fence });
            }
            *fence = term;
        }
        let mut p = lock(&self.published);
        p.push(event.clone());
        Ok(format!("0-{}", p.len()))
    }
}

#[async_trait]
impl EventPublisher for RecordingPublisher {
    async fn publish(&self, event: &RawEvent) -> Result<String, PublishEventError> {
        self.append(event, None).await
    }

    async fn publish_as_leader(
        &self,
        event: &RawEvent,
        term: ports::LeaderTerm,
    ) -> Result<String, PublishEventError> {
        self.append(event, Some(term)).await
    }

    async fn confirm(&self) -> Result<(), PublishEventError> {
        if *lock(&self.unconfirmed) {
            return Err(PublishEventError::Unavailable(anyhow::anyhow!(
                "no replica acknowledged"
            )));
        }
        *lock(&self.confirms) += 1;
        Ok(())
    }
}

/// A clock that only moves when told.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    pub fn advance(&self, by: chrono::Duration) {
        *lock(&self.now) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *lock(&self.now)
    }
}

/// Records the accounts it deleted; can be made to fail.
#[derive(Debug, Default)]
pub struct RecordingIdentityAdmin {
    deleted: Mutex<Vec<FirebaseUid>>,
    down: Mutex<bool>,
}

impl RecordingIdentityAdmin {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn deleted(&self) -> Vec<FirebaseUid> {
        lock(&self.deleted).clone()
    }

    /// While down, every call fails with `Unavailable`.
    pub fn set_down(&self, down: bool) {
        *lock(&self.down) = down;
    }
}

#[async_trait]
impl ports::auth::IdentityAdmin for RecordingIdentityAdmin {
    async fn delete_user(&self, uid: &FirebaseUid) -> Result<(), ports::auth::IdentityAdminError> {
        if *lock(&self.down) {
            return Err(ports::auth::IdentityAdminError::Unavailable(
                anyhow::anyhow!("identity provider is down"),
            ));
        }
        lock(&self.deleted).push(uid.clone());
        Ok(())
    }

    fn describe(&self) -> String {
        "recording identity admin".into()
    }
}

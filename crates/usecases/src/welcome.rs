//! The welcome pipeline: a verified address -> one `email:welcome` job ->
//! at most one mail per Firebase uid, ever, and per address per window.
//!
//! Only an address the identity provider verified is mailed (the token's
//! `email_verified`): `UserCreated` carries it when the creating token
//! vouched for one, `EmailVerified` when a later token does. An address a
//! client typed into its profile is never mailed. The send is claimed in
//! the [`WelcomeLedger`] under the job's lease, so a rerun of the same job
//! after its worker died takes the claim over at once, and no other attempt
//! sends while it is held.

use async_trait::async_trait;
use domain::{
    DisplayName, DomainEvent, Email, EventEnvelope, FirebaseUid, Mail, UserId, WelcomeMail,
};
use ports::{
    ClaimWelcomeOutcome, EnqueueJobError, EventHandler, HandleEventError, HandleJob, Job,
    JobContext, JobFailure, JobQueue, Mailer, NewJob, SendHolder, SendMailError, WelcomeLedger,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// The consumer group that turns verified addresses into welcome mail jobs.
pub const WELCOME_GROUP: &str = "welcome-mail";
/// The queue mail jobs run on.
pub const MAIL_QUEUE: &str = "mail";
/// How long the unique key of a welcome job holds at most.
pub const WELCOME_UNIQUE_TTL: Duration = Duration::from_secs(24 * 3600);
/// One welcome mail per address within this window, whatever the uid.
pub const WELCOME_RECIPIENT_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long another job's claim on a send is honoured: more than a whole
/// SMTP conversation takes. A later attempt of the *same* job takes its
/// earlier attempt's claim over at once (that lease was recovered).
pub const WELCOME_SENDING_TTL: Duration = Duration::from_secs(180);

/// `email:welcome`, version 2: one welcome mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WelcomeMailJob {
    pub user_id: UserId,
    pub uid: FirebaseUid,
    /// A verified address.
    pub email: Email,
    pub display_name: Option<DisplayName>,
}

impl Job for WelcomeMailJob {
    const KIND: &'static str = "email:welcome";
    const QUEUE: &'static str = MAIL_QUEUE;
    const VERSION: u16 = 2;

    /// Version 1, from before addresses had to be verified, carried the
    /// profile's address: it is completed without a mail.
    fn decode(version: u16, payload: &serde_json::Value) -> Result<Option<Self>, JobFailure> {
        if version < Self::VERSION {
            return Ok(None);
        }
        if version > Self::VERSION {
            return Err(JobFailure::permanent(format!(
                "payload version {version} is newer than this worker"
            )));
        }
        serde_json::from_value(payload.clone())
            .map(Some)
            .map_err(|e| JobFailure::permanent(format!("payload does not decode: {e}")))
    }
}

impl WelcomeMailJob {
    /// The unique key: one live welcome job per uid.
    pub fn unique_key(uid: &FirebaseUid) -> String {
        format!("welcome:{uid}")
    }
}

/// Handles `user.created` and `user.email_verified` for the `welcome-mail`
/// group.
#[derive(Clone)]
pub struct WelcomeMailTrigger {
    jobs: Arc<dyn JobQueue>,
}

impl std::fmt::Debug for WelcomeMailTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WelcomeMailTrigger").finish_non_exhaustive()
    }
}

impl WelcomeMailTrigger {
    pub fn new(jobs: Arc<dyn JobQueue>) -> Self {
        Self { jobs }
    }
}

#[async_trait]
impl EventHandler for WelcomeMailTrigger {
    fn handles(&self, event: &DomainEvent) -> bool {
        matches!(
            event,
            DomainEvent::UserCreated(_) | DomainEvent::EmailVerified(_)
        )
    }

    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandleEventError> {
        let payload = match &event.event {
            DomainEvent::UserCreated(created) => {
                let Some(email) = created.verified_email.clone() else {
                    tracing::info!(user_id = %created.user_id, "new user has no verified address; no welcome mail until one is verified");
                    return Ok(());
                };
                WelcomeMailJob {
                    user_id: created.user_id,
                    uid: created.uid.clone(),
                    email,
                    display_name: created.display_name.clone(),
                }
            }
            DomainEvent::EmailVerified(verified) => WelcomeMailJob {
                user_id: verified.user_id,
                uid: verified.uid.clone(),
                email: verified.email.clone(),
                display_name: verified.display_name.clone(),
            },
            DomainEvent::ProfileUpdated(_) | DomainEvent::UserDeleted(_) => return Ok(()),
        };
        let job = NewJob::of(&payload)
            .map_err(|e| HandleEventError::Reject(format!("cannot encode the job: {e}")))?
            .unique(WelcomeMailJob::unique_key(&payload.uid), WELCOME_UNIQUE_TTL);
        match self.jobs.enqueue(job).await {
            Ok(id) => {
                tracing::info!(user_id = %payload.user_id, job_id = %id, event_id = %event.id, "welcome mail enqueued");
                Ok(())
            }
            Err(EnqueueJobError::Duplicate { .. }) => {
                tracing::info!(user_id = %payload.user_id, "welcome mail already queued");
                Ok(())
            }
            Err(EnqueueJobError::Invalid(why)) => Err(HandleEventError::Reject(why)),
            Err(EnqueueJobError::Unavailable(e) | EnqueueJobError::Unknown(e)) => {
                Err(HandleEventError::Retry(e))
            }
        }
    }
}

/// Runs `email:welcome`: claims the send in the ledger, sends, records it.
/// What remains is the one window no SMTP client can close: a crash after
/// the server accepted the mail but before the ledger heard of it. The rerun
/// then sends again, with the same Message-ID, which mailbox providers use
/// to fold the two.
#[derive(Clone)]
pub struct SendWelcomeMail {
    mailer: Arc<dyn Mailer>,
    ledger: Arc<dyn WelcomeLedger>,
}

impl std::fmt::Debug for SendWelcomeMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendWelcomeMail").finish_non_exhaustive()
    }
}

/// How many times recording a sent mail is tried before giving up on it.
const MARK_ATTEMPTS: u32 = 3;

impl SendWelcomeMail {
    pub fn new(mailer: Arc<dyn Mailer>, ledger: Arc<dyn WelcomeLedger>) -> Self {
        Self { mailer, ledger }
    }

    async fn mark_sent(&self, uid: &FirebaseUid, holder: SendHolder) {
        for attempt in 1..=MARK_ATTEMPTS {
            match self.ledger.mark_sent(uid, holder).await {
                Ok(()) => return,
                Err(e) if attempt < MARK_ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, "cannot record the sent welcome mail yet; trying again");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "welcome mail sent, but the ledger does not know: another job for this uid could send it again once the claim is stale");
                }
            }
        }
    }
}

#[async_trait]
impl HandleJob for SendWelcomeMail {
    type Job = WelcomeMailJob;

    async fn run(&self, payload: WelcomeMailJob, job: &JobContext) -> Result<(), JobFailure> {
        let holder = SendHolder {
            job: job.id,
            lease: job.lease,
        };
        let user_id = payload.user_id;
        let claimed = self
            .ledger
            .claim(
                &payload.uid,
                &payload.email,
                holder,
                WELCOME_RECIPIENT_WINDOW,
                WELCOME_SENDING_TTL,
            )
            .await
            .map_err(|e| JobFailure::retry(format!("cannot claim the send: {e}")))?;
        match claimed {
            ClaimWelcomeOutcome::Claimed => {}
            ClaimWelcomeOutcome::AlreadySent => {
                tracing::info!(%user_id, "this uid was welcomed before; not sending again");
                return Ok(());
            }
            ClaimWelcomeOutcome::RecipientMailedRecently => {
                tracing::info!(%user_id, "this address got a welcome mail recently (another account); not sending");
                return Ok(());
            }
            ClaimWelcomeOutcome::Busy { retry_after } => {
                tracing::info!(%user_id, "another attempt is sending this welcome mail; retrying later");
                return Err(JobFailure::Retry {
                    error: "another attempt is sending this mail".into(),
                    after: Some(retry_after),
                });
            }
        }
        let mail = Mail::Welcome(WelcomeMail {
            user_id,
            to: payload.email,
            display_name: payload.display_name,
        });
        let outcome = self.mailer.send(&mail).await;
        if outcome.is_err() {
            // Not sent: the next attempt (or another job) may go at once.
            if let Err(e) = self.ledger.release(&payload.uid, holder).await {
                tracing::warn!(%user_id, error = %e, "cannot release the welcome mail claim; the retry takes it over");
            }
        }
        match outcome {
            Ok(()) => {
                self.mark_sent(&payload.uid, holder).await;
                tracing::info!(%user_id, job_id = %job.id, attempt = job.attempt, "welcome mail sent");
                Ok(())
            }
            Err(SendMailError::Rejected { reply }) => Err(JobFailure::permanent(format!(
                "the mail server refused it: {reply}"
            ))),
            Err(SendMailError::Unavailable { reason }) => Err(JobFailure::retry(format!(
                "mail server unavailable: {reason}"
            ))),
            Err(SendMailError::Unknown(e)) => Err(JobFailure::retry(format!("{e:#}"))),
        }
    }
}

/// Drops the addresses of welcome mails older than the window from the
/// ledger (their uids stay known). Runs as a periodic job.
#[derive(Clone)]
pub struct ForgetWelcomeRecipients {
    ledger: Arc<dyn WelcomeLedger>,
}

impl std::fmt::Debug for ForgetWelcomeRecipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForgetWelcomeRecipients")
            .finish_non_exhaustive()
    }
}

/// `email:forget-welcome-recipients`: the periodic job that forgets old
/// recipients (no payload).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetRecipientsJob {}

impl Job for ForgetRecipientsJob {
    const KIND: &'static str = "email:forget-welcome-recipients";
    const QUEUE: &'static str = MAIL_QUEUE;
    const VERSION: u16 = 1;
}

impl ForgetWelcomeRecipients {
    pub fn new(ledger: Arc<dyn WelcomeLedger>) -> Self {
        Self { ledger }
    }
}

#[async_trait]
impl HandleJob for ForgetWelcomeRecipients {
    type Job = ForgetRecipientsJob;

    async fn run(&self, _: ForgetRecipientsJob, _job: &JobContext) -> Result<(), JobFailure> {
        let n = self
            .ledger
            .forget_recipients(WELCOME_RECIPIENT_WINDOW)
            .await
            .map_err(JobFailure::retry)?;
        if n > 0 {
            tracing::info!(forgotten = n, "forgot the addresses of old welcome mails");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use domain::{EmailVerified, UserCreated};
    use ports::testing::{InMemoryWelcomeLedger, MailOutcome, RecordingJobQueue, RecordingMailer};
    use ports::{JobHandler as _, JobId, Typed};

    fn uid(s: &str) -> FirebaseUid {
        FirebaseUid::parse(s).unwrap()
    }

    fn email(s: &str) -> Email {
        Email::parse(s).unwrap()
    }

    fn created(typed: Option<&str>, verified: Option<&str>) -> EventEnvelope {
        EventEnvelope::new(
            DomainEvent::UserCreated(UserCreated {
                user_id: UserId::new(),
                uid: uid("u"),
                email: typed.map(email),
                display_name: Some(DisplayName::parse("Ada").unwrap()),
                verified_email: verified.map(email),
            }),
            Utc::now(),
        )
    }

    #[tokio::test]
    async fn a_verified_new_user_gets_one_unique_welcome_job() {
        let jobs = Arc::new(RecordingJobQueue::new());
        let trigger = WelcomeMailTrigger::new(jobs.clone());
        let event = created(Some("typed@example.com"), Some("ada@example.com"));
        trigger.handle(&event).await.unwrap();
        trigger.handle(&event).await.unwrap();
        let queued = jobs.jobs();
        assert_eq!(
            queued.len(),
            1,
            "the duplicate is refused by the unique key"
        );
        let job = &queued[0].1;
        assert_eq!(
            (job.kind.as_str(), job.queue.as_str(), job.version),
            (WelcomeMailJob::KIND, MAIL_QUEUE, 2)
        );
        let payload: WelcomeMailJob = serde_json::from_value(job.payload.clone()).unwrap();
        assert_eq!(
            payload.email.as_str(),
            "ada@example.com",
            "the verified one"
        );
        assert_eq!(payload.uid, uid("u"));
    }

    #[tokio::test]
    async fn a_typed_or_unverified_address_gets_no_job_until_it_is_verified() {
        let jobs = Arc::new(RecordingJobQueue::new());
        let trigger = WelcomeMailTrigger::new(jobs.clone());
        trigger
            .handle(&created(Some("victim@example.com"), None))
            .await
            .unwrap();
        assert!(jobs.jobs().is_empty());
        let verified = EventEnvelope::new(
            DomainEvent::EmailVerified(EmailVerified {
                user_id: UserId::new(),
                uid: uid("u"),
                email: email("me@example.com"),
                display_name: None,
            }),
            Utc::now(),
        );
        assert!(trigger.handles(&verified.event));
        trigger.handle(&verified).await.unwrap();
        let queued = jobs.jobs();
        assert_eq!(queued.len(), 1);
        let payload: WelcomeMailJob = serde_json::from_value(queued[0].1.payload.clone()).unwrap();
        assert_eq!(payload.email.as_str(), "me@example.com");
    }

    fn job_for(payload: &WelcomeMailJob, id: JobId, lease: u64) -> JobContext {
        JobContext {
            id,
            kind: WelcomeMailJob::KIND.into(),
            version: WelcomeMailJob::VERSION,
            payload: serde_json::to_value(payload).unwrap(),
            queue: MAIL_QUEUE.into(),
            attempt: u32::try_from(lease).unwrap(),
            max_retries: 5,
            lease,
        }
    }

    fn payload(user: &str, to: &str) -> WelcomeMailJob {
        WelcomeMailJob {
            user_id: UserId::new(),
            uid: uid(user),
            email: email(to),
            display_name: Some(DisplayName::parse("Ada").unwrap()),
        }
    }

    /// The handler as the worker runs it (payload decoded by `Typed`).
    fn handler() -> (Typed<SendWelcomeMail>, Arc<RecordingMailer>) {
        let mailer = Arc::new(RecordingMailer::new());
        let handler = SendWelcomeMail::new(mailer.clone(), Arc::new(InMemoryWelcomeLedger::new()));
        (Typed(Arc::new(handler)), mailer)
    }

    #[tokio::test]
    async fn a_uid_gets_one_mail_ever_however_many_jobs_and_accounts() {
        let (handler, mailer) = handler();
        for round in 0..3 {
            // A new account for the same uid each round: a new user id and job.
            let p = payload("ada", "ada@example.com");
            handler.handle(&job_for(&p, JobId::new(), 1)).await.unwrap();
            assert_eq!(mailer.sent().len(), 1, "round {round}");
        }
        match &mailer.sent()[0] {
            Mail::Welcome(w) => assert_eq!(w.greeting_name(), "Ada"),
        }
    }

    #[tokio::test]
    async fn an_address_gets_one_mail_whatever_the_uid() {
        let (handler, mailer) = handler();
        handler
            .handle(&job_for(
                &payload("one", "shared@example.com"),
                JobId::new(),
                1,
            ))
            .await
            .unwrap();
        handler
            .handle(&job_for(
                &payload("two", "Shared@example.com"),
                JobId::new(),
                1,
            ))
            .await
            .unwrap();
        assert_eq!(mailer.sent().len(), 1);
    }

    #[tokio::test]
    async fn another_job_waits_while_a_send_is_in_flight_but_a_recovered_lease_goes_at_once() {
        let mailer = Arc::new(RecordingMailer::new());
        let ledger = Arc::new(InMemoryWelcomeLedger::new());
        let handler = Typed(Arc::new(SendWelcomeMail::new(
            mailer.clone(),
            ledger.clone(),
        )));
        let p = payload("ada", "ada@example.com");
        // A worker claimed the send under lease 1 of this job, then died.
        let job = JobId::new();
        let dead = SendHolder { job, lease: 1 };
        let claimed = ledger
            .claim(
                &p.uid,
                &p.email,
                dead,
                WELCOME_RECIPIENT_WINDOW,
                WELCOME_SENDING_TTL,
            )
            .await
            .unwrap();
        assert_eq!(claimed, ClaimWelcomeOutcome::Claimed);
        // Another job for the uid waits for it...
        match handler.handle(&job_for(&p, JobId::new(), 1)).await {
            Err(JobFailure::Retry {
                after: Some(after), ..
            }) => assert!(after > Duration::ZERO && after <= WELCOME_SENDING_TTL),
            other => panic!("expected a delayed retry, got {other:?}"),
        }
        assert!(mailer.sent().is_empty());
        // ...but the same job, recovered under lease 2, sends at once.
        handler.handle(&job_for(&p, job, 2)).await.unwrap();
        assert_eq!(mailer.sent().len(), 1);
    }

    #[tokio::test]
    async fn smtp_failures_release_the_claim_and_become_retries_or_permanent_failures() {
        let (handler, mailer) = handler();
        mailer.script([
            MailOutcome::Unavailable("451 later".into()),
            MailOutcome::Reject("550 no such user".into()),
        ]);
        let p = payload("late", "late@example.com");
        let job = JobId::new();
        assert!(
            matches!(handler.handle(&job_for(&p, job, 1)).await, Err(JobFailure::Retry { error, .. }) if error.contains("451"))
        );
        assert!(
            matches!(handler.handle(&job_for(&p, JobId::new(), 1)).await, Err(JobFailure::Permanent { error }) if error.contains("550")),
            "released: another job may try at once"
        );
        assert!(mailer.sent().is_empty());
        handler.handle(&job_for(&p, job, 2)).await.unwrap();
        assert_eq!(
            mailer.sent().len(),
            1,
            "nothing was recorded as sent before"
        );
        let mut bad = job_for(&p, JobId::new(), 1);
        bad.payload = serde_json::json!({"nope": 1});
        assert!(matches!(
            handler.handle(&bad).await,
            Err(JobFailure::Permanent { .. })
        ));
    }

    #[tokio::test]
    async fn a_job_from_before_verified_addresses_is_not_sent() {
        let (handler, mailer) = handler();
        let mut old = job_for(&payload("old", "old@example.com"), JobId::new(), 1);
        old.version = 1;
        old.payload = serde_json::json!({
            "user_id": UserId::new(), "email": "typed@example.com", "display_name": null
        });
        handler.handle(&old).await.unwrap();
        assert!(mailer.sent().is_empty());
    }

    #[tokio::test]
    async fn a_down_queue_means_retry() {
        let jobs = Arc::new(RecordingJobQueue::new());
        let trigger = WelcomeMailTrigger::new(jobs.clone());
        jobs.set_down(true);
        assert!(matches!(
            trigger.handle(&created(None, Some("a@b.com"))).await,
            Err(HandleEventError::Retry(_))
        ));
        let deleted = DomainEvent::UserDeleted(domain::UserDeleted {
            user_id: UserId::new(),
            uid: uid("u"),
        });
        assert!(!trigger.handles(&deleted));
    }
}

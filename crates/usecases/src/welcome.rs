//! The welcome pipeline: a verified address -> one `email:welcome` job ->
//! at most one mail per Firebase uid, ever, and per address per window.
//!
//! Only an address the identity provider verified is mailed (the token's
//! `email_verified`): `UserCreated` says so when the creating token
//! vouched for one, `EmailVerified` when a later token does; the address
//! itself is read from the users table when the event is handled (events
//! carry no personal data), so an account deleted meanwhile gets no job.
//! An address a client typed into its profile is never mailed. The send is claimed in
//! the [`WelcomeLedger`] under the job's lease, so a rerun of the same job
//! after its worker died takes the claim over at once, and no other attempt
//! sends while it is held.

use async_trait::async_trait;
use domain::{
    DisplayName, DomainEvent, Email, EventEnvelope, FirebaseUid, Mail, UserId, WelcomeMail,
};
use ports::{
    ClaimWelcomeOutcome, EnqueueJobError, EventHandler, HandleEventError, HandleJob, Job,
    JobContext, JobFailure, JobQueue, Mailer, NewJob, SendHolder, SendMailError, UserRepository,
    WelcomeLedger,
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
    users: Arc<dyn UserRepository>,
}

impl std::fmt::Debug for WelcomeMailTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WelcomeMailTrigger").finish_non_exhaustive()
    }
}

impl WelcomeMailTrigger {
    /// Enqueues on `jobs`; reads addresses and names from `users`.
    pub fn new(jobs: Arc<dyn JobQueue>, users: Arc<dyn UserRepository>) -> Self {
        Self { jobs, users }
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
        let (user_id, uid) = match &event.event {
            DomainEvent::UserCreated(created) => {
                if !created.vouched_for_an_address() {
                    tracing::info!(user_id = %created.user_id, "new user has no verified address; no welcome mail until one is verified");
                    return Ok(());
                }
                (created.user_id, &created.uid)
            }
            DomainEvent::EmailVerified(verified) => (verified.user_id, &verified.uid),
            _ => return Ok(()),
        };
        let retry = |e: ports::FindUserError| {
            HandleEventError::Retry(anyhow::anyhow!("cannot read the user: {e}"))
        };
        // The user as they are now: the same account (not a later one with
        // the uid), and the address their provider last vouched for.
        let user = self.users.find_by_uid(uid).await.map_err(retry)?;
        let Some(user) = user.filter(|u| u.id == user_id) else {
            tracing::info!(%user_id, "the account is gone; no welcome mail");
            return Ok(());
        };
        let Some(email) = self.users.verified_email(uid).await.map_err(retry)? else {
            tracing::info!(%user_id, "no verified address on the account; no welcome mail");
            return Ok(());
        };
        let payload = WelcomeMailJob {
            user_id,
            uid: uid.clone(),
            email,
            display_name: user.display_name,
        };
        let job = NewJob::of(&payload)
            .map_err(|e| HandleEventError::Reject(format!("cannot encode the job: {e}")))?
            .owned_by(payload.uid.as_str())
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
    /// When set, no mail goes to a uid that has no account any more (it
    /// was deleted while the job waited).
    users: Option<Arc<dyn UserRepository>>,
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
        Self {
            mailer,
            ledger,
            users: None,
        }
    }

    /// Checks, before claiming the send, that the uid still has an account.
    pub fn with_users(mut self, users: Arc<dyn UserRepository>) -> Self {
        self.users = Some(users);
        self
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
        if let Some(users) = &self.users {
            let account = users
                .find_by_uid(&payload.uid)
                .await
                .map_err(|e| JobFailure::retry(format!("cannot look the user up: {e}")))?;
            if account.is_none() {
                tracing::info!(%user_id, "the account was deleted before its welcome mail went out; not sending");
                return Ok(());
            }
        }
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
mod tests;

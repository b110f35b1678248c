//! The welcome pipeline's first step: `UserCreated` -> one `email:welcome` job.

use async_trait::async_trait;
use domain::{DisplayName, DomainEvent, Email, EventEnvelope, Mail, UserId, WelcomeMail};
use ports::{
    Cache, EnqueueJobError, EventHandler, HandleEventError, JobContext, JobFailure, JobHandler,
    JobQueue, Mailer, NewJob, SendMailError,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// The consumer group that turns new users into welcome mail jobs.
pub const WELCOME_GROUP: &str = "welcome-mail";
/// The job type that sends one welcome mail.
pub const WELCOME_JOB: &str = "email:welcome";
/// The queue mail jobs run on.
pub const MAIL_QUEUE: &str = "mail";
/// How long the unique key of a welcome job holds at most.
pub const WELCOME_UNIQUE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Payload of `email:welcome`, version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WelcomeMailJob {
    pub user_id: UserId,
    pub email: Email,
    pub display_name: Option<DisplayName>,
}

impl WelcomeMailJob {
    pub const VERSION: u16 = 1;

    /// The unique key: one live welcome job per user.
    pub fn unique_key(user_id: &UserId) -> String {
        format!("welcome:{user_id}")
    }
}

/// Handles `user.created` for the `welcome-mail` group.
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
    fn handles(&self, event_type: &str) -> bool {
        event_type == "user.created"
    }

    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandleEventError> {
        let DomainEvent::UserCreated(created) = &event.event else {
            return Ok(());
        };
        let Some(email) = created.email.clone() else {
            tracing::info!(user_id = %created.user_id, "new user has no e-mail address; no welcome mail");
            return Ok(());
        };
        let payload = WelcomeMailJob {
            user_id: created.user_id,
            email,
            display_name: created.display_name.clone(),
        };
        let job = NewJob::new(WELCOME_JOB, WelcomeMailJob::VERSION, &payload)
            .map_err(|e| HandleEventError::Reject(format!("cannot encode the job: {e}")))?
            .on_queue(MAIL_QUEUE)
            .unique(
                WelcomeMailJob::unique_key(&created.user_id),
                WELCOME_UNIQUE_TTL,
            );
        match self.jobs.enqueue(job).await {
            Ok(id) => {
                tracing::info!(user_id = %created.user_id, job_id = %id, event_id = %event.id, "welcome mail enqueued");
                Ok(())
            }
            Err(EnqueueJobError::Duplicate { .. }) => {
                tracing::info!(user_id = %created.user_id, "welcome mail already queued");
                Ok(())
            }
            Err(EnqueueJobError::Invalid(why)) => Err(HandleEventError::Reject(why)),
            Err(EnqueueJobError::Unavailable(e) | EnqueueJobError::Unknown(e)) => {
                Err(HandleEventError::Retry(e))
            }
        }
    }
}

/// How long "this user's welcome mail was sent" is remembered.
pub const WELCOME_SENT_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// How long one attempt holds the right to send a user's welcome mail: more
/// than a whole SMTP conversation takes, so two runs of the job (a lease
/// that expired under a slow but live worker) never send at once.
pub const WELCOME_SENDING_TTL: Duration = Duration::from_secs(180);

/// Runs `email:welcome`: sends the mail once per user. An attempt first
/// claims the send (a counter that only the first claimant sees at 1), so
/// two runs at once cannot both send; a marker set after the server
/// accepted the mail stops a later rerun (a worker that died between
/// sending and acknowledging) from mailing twice. What remains is the one
/// window no SMTP client can close: a crash after the server accepted the
/// mail but before the marker was stored.
#[derive(Clone)]
pub struct SendWelcomeMail {
    mailer: Arc<dyn Mailer>,
    sent: Arc<dyn Cache>,
}

impl std::fmt::Debug for SendWelcomeMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendWelcomeMail").finish_non_exhaustive()
    }
}

impl SendWelcomeMail {
    pub fn new(mailer: Arc<dyn Mailer>, sent: Arc<dyn Cache>) -> Self {
        Self { mailer, sent }
    }

    fn marker(user_id: &UserId) -> String {
        format!("welcome-sent:{user_id}")
    }

    fn claim(user_id: &UserId) -> String {
        format!("welcome-sending:{user_id}")
    }
}

#[async_trait]
impl JobHandler for SendWelcomeMail {
    async fn handle(&self, job: &JobContext) -> Result<(), JobFailure> {
        if job.version > WelcomeMailJob::VERSION {
            return Err(JobFailure::permanent(format!(
                "payload version {} is newer than this worker",
                job.version
            )));
        }
        let payload: WelcomeMailJob = job.payload()?;
        let marker = Self::marker(&payload.user_id);
        match self.sent.get(&marker).await {
            Ok(Some(_)) => {
                tracing::info!(user_id = %payload.user_id, "welcome mail already sent; not sending again");
                return Ok(());
            }
            Ok(None) => {}
            Err(e) => {
                return Err(JobFailure::retry(format!(
                    "cannot check whether the mail was sent: {e}"
                )));
            }
        }
        let claim = Self::claim(&payload.user_id);
        match self.sent.incr_window(&claim, WELCOME_SENDING_TTL).await {
            Ok((1, _)) => {}
            Ok((_, left)) => {
                tracing::info!(user_id = %payload.user_id, "another attempt is sending this welcome mail; retrying later");
                return Err(JobFailure::Retry {
                    error: "another attempt is sending this mail".into(),
                    after: Some(left),
                });
            }
            Err(e) => {
                return Err(JobFailure::retry(format!("cannot claim the send: {e}")));
            }
        }
        let user_id = payload.user_id;
        let mail = Mail::Welcome(WelcomeMail {
            user_id,
            to: payload.email,
            display_name: payload.display_name,
        });
        let outcome = self.mailer.send(&mail).await;
        if outcome.is_err() {
            // Not sent: the next attempt may go at once.
            if let Err(e) = self.sent.delete(&claim).await {
                tracing::warn!(%user_id, error = %e, "cannot release the welcome mail claim; the retry waits for it to expire");
            }
        }
        match outcome {
            Ok(()) => {
                if let Err(e) = self.sent.set(&marker, b"1", WELCOME_SENT_TTL).await {
                    tracing::warn!(%user_id, error = %e, "welcome mail sent, but the sent marker was not stored");
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use domain::{FirebaseUid, UserCreated};
    use ports::testing::RecordingJobQueue;

    fn created(email: Option<&str>) -> EventEnvelope {
        EventEnvelope::new(
            DomainEvent::UserCreated(UserCreated {
                user_id: UserId::new(),
                uid: FirebaseUid::parse("u").unwrap(),
                email: email.map(|e| Email::parse(e).unwrap()),
                display_name: Some(DisplayName::parse("Ada").unwrap()),
            }),
            Utc::now(),
        )
    }

    #[tokio::test]
    async fn a_new_user_gets_one_unique_welcome_job() {
        let jobs = Arc::new(RecordingJobQueue::new());
        let trigger = WelcomeMailTrigger::new(jobs.clone());
        let event = created(Some("ada@example.com"));
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
            (WELCOME_JOB, MAIL_QUEUE, 1)
        );
        let payload: WelcomeMailJob = serde_json::from_value(job.payload.clone()).unwrap();
        assert_eq!(payload.email.as_str(), "ada@example.com");
    }

    fn job_for(payload: &WelcomeMailJob, attempt: u32) -> JobContext {
        JobContext {
            id: ports::JobId::new(),
            kind: WELCOME_JOB.into(),
            version: 1,
            payload: serde_json::to_value(payload).unwrap(),
            queue: MAIL_QUEUE.into(),
            attempt,
            max_retries: 5,
        }
    }

    fn payload() -> WelcomeMailJob {
        WelcomeMailJob {
            user_id: UserId::new(),
            email: Email::parse("ada@example.com").unwrap(),
            display_name: Some(DisplayName::parse("Ada").unwrap()),
        }
    }

    #[tokio::test]
    async fn the_mail_is_sent_once_even_when_the_job_runs_twice() {
        use ports::testing::{InMemoryCache, RecordingMailer};
        let mailer = Arc::new(RecordingMailer::new());
        let handler = SendWelcomeMail::new(mailer.clone(), Arc::new(InMemoryCache::new()));
        let p = payload();
        handler.handle(&job_for(&p, 1)).await.unwrap();
        handler.handle(&job_for(&p, 2)).await.unwrap();
        assert_eq!(mailer.sent().len(), 1);
        match &mailer.sent()[0] {
            Mail::Welcome(w) => assert_eq!(w.greeting_name(), "Ada"),
        }
    }

    #[tokio::test]
    async fn two_attempts_at_once_never_both_send() {
        use ports::testing::{InMemoryCache, RecordingMailer};
        let mailer = Arc::new(RecordingMailer::new());
        let cache = Arc::new(InMemoryCache::new());
        let handler = SendWelcomeMail::new(mailer.clone(), cache.clone());
        let p = payload();
        // Another attempt holds the claim: it is sending right now.
        let claim = SendWelcomeMail::claim(&p.user_id);
        cache
            .incr_window(&claim, WELCOME_SENDING_TTL)
            .await
            .unwrap();
        match handler.handle(&job_for(&p, 2)).await {
            Err(JobFailure::Retry {
                after: Some(after), ..
            }) => {
                assert!(after > Duration::ZERO && after <= WELCOME_SENDING_TTL);
            }
            other => panic!("expected a delayed retry, got {other:?}"),
        }
        assert!(
            mailer.sent().is_empty(),
            "nothing sent while the other attempt runs"
        );
        // That attempt died without sending; once its claim lapses, the
        // retry sends.
        cache.delete(&claim).await.unwrap();
        handler.handle(&job_for(&p, 3)).await.unwrap();
        assert_eq!(mailer.sent().len(), 1);
    }

    #[tokio::test]
    async fn smtp_failures_become_retries_or_permanent_failures() {
        use ports::testing::{InMemoryCache, MailOutcome, RecordingMailer};
        let mailer = Arc::new(RecordingMailer::new());
        mailer.script([
            MailOutcome::Unavailable("451 later".into()),
            MailOutcome::Reject("550 no such user".into()),
        ]);
        let handler = SendWelcomeMail::new(mailer.clone(), Arc::new(InMemoryCache::new()));
        let p = payload();
        assert!(
            matches!(handler.handle(&job_for(&p, 1)).await, Err(JobFailure::Retry { error, .. }) if error.contains("451"))
        );
        assert!(
            matches!(handler.handle(&job_for(&p, 2)).await, Err(JobFailure::Permanent { error }) if error.contains("550"))
        );
        assert!(mailer.sent().is_empty());
        let mut bad = job_for(&p, 1);
        bad.payload = serde_json::json!({"nope": 1});
        assert!(matches!(
            handler.handle(&bad).await,
            Err(JobFailure::Permanent { .. })
        ));
    }

    #[tokio::test]
    async fn a_user_without_email_gets_no_job_and_a_down_queue_means_retry() {
        let jobs = Arc::new(RecordingJobQueue::new());
        let trigger = WelcomeMailTrigger::new(jobs.clone());
        trigger.handle(&created(None)).await.unwrap();
        assert!(jobs.jobs().is_empty());
        jobs.set_down(true);
        assert!(matches!(
            trigger.handle(&created(Some("a@b.com"))).await,
            Err(HandleEventError::Retry(_))
        ));
        assert!(!trigger.handles("user.deleted"));
    }
}

//! The welcome pipeline's first step: `UserCreated` -> one `email:welcome` job.

use async_trait::async_trait;
use domain::{DisplayName, DomainEvent, Email, EventEnvelope, UserId};
use ports::{EnqueueJobError, EventHandler, HandleEventError, JobQueue, NewJob};
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

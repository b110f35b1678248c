//! Push notifications to a user's devices: queued (`push:send`, fanned out
//! to one `push:send-device` job per token), or sent at once for the test
//! endpoint. Dead tokens are deleted as FCM reports them.
//!
//! # Layout
//!
//! - this file: [`PushNotifications`], what use cases and routes call;
//! - `jobs.rs`: the two jobs and their handlers (fan-out, one device);
//! - `delivery.rs`: one message to one device, and what became of it.

mod delivery;
mod jobs;

use delivery::deliver;
pub use delivery::{DeliveryOutcome, DeviceDelivery};
pub use jobs::{FanOutPush, PushDeviceJob, PushSendJob, SendPushToDevice};

use async_trait::async_trait;
use domain::{FirebaseUid, Platform, PushToken, VerifiedIdentity};
use ports::{
    EnqueueJobError, HandleJob, Job, JobContext, JobFailure, JobId, JobQueue, NewJob, PushMessage,
    PushSender, PushTokenRepository, SendPushError,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// The queue push jobs run on.
pub const PUSH_QUEUE: &str = "push";
/// A user with more devices than this gets the message on the first ones.
pub const MAX_DEVICES_PER_USER: usize = 500;
/// Devices the test endpoint sends to at most (the most recently seen
/// ones), and how many at once: two waves of FCM calls, each bounded by the
/// sender's own timeouts, so the request ends however FCM behaves.
pub const TEST_PUSH_MAX_DEVICES: usize = 20;
const TEST_PUSH_CONCURRENCY: usize = 10;
/// Retries of one device's message (transient FCM errors, with backoff).
const DEVICE_JOB_RETRIES: u32 = 8;

/// What a test push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestPushReport {
    /// One per device tried, most recently seen first.
    pub deliveries: Vec<DeviceDelivery>,
    /// Registered devices not tried (over [`TEST_PUSH_MAX_DEVICES`]).
    pub skipped: usize,
}

#[derive(Debug, Error)]
pub enum NotifyUserError {
    #[error("push payload too large ({size} bytes, max {max})")]
    TooLarge { size: usize, max: usize },
    #[error("job queue unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

#[derive(Debug, Error)]
pub enum SendTestPushError {
    #[error("push token store unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

/// Notifying users' devices: what use cases and routes call.
#[derive(Clone)]
pub struct PushNotifications {
    tokens: Arc<dyn PushTokenRepository>,
    sender: Arc<dyn PushSender>,
    jobs: Arc<dyn JobQueue>,
}

impl std::fmt::Debug for PushNotifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushNotifications").finish_non_exhaustive()
    }
}

impl PushNotifications {
    pub fn new(
        tokens: Arc<dyn PushTokenRepository>,
        sender: Arc<dyn PushSender>,
        jobs: Arc<dyn JobQueue>,
    ) -> Self {
        Self {
            tokens,
            sender,
            jobs,
        }
    }

    /// False when messages are only logged (no FCM credentials).
    pub fn is_live(&self) -> bool {
        self.sender.is_live()
    }

    /// Queues `message` for every device of the user with `uid` (a worker
    /// sends it, retrying what FCM asks to retry). A user without devices
    /// is not an error: the job finds nothing to send.
    pub async fn notify_user(
        &self,
        uid: &FirebaseUid,
        message: PushMessage,
    ) -> Result<JobId, NotifyUserError> {
        if let Err(SendPushError::PayloadTooLarge { size, max }) = message.check_size() {
            return Err(NotifyUserError::TooLarge { size, max });
        }
        let payload = PushSendJob {
            uid: uid.clone(),
            message,
        };
        let job = NewJob::of(&payload)
            .map_err(|e| NotifyUserError::Unknown(e.into()))?
            .timeout(Duration::from_secs(60));
        match self.jobs.enqueue(job).await {
            Ok(id) => Ok(id),
            Err(EnqueueJobError::Unavailable(e)) => Err(NotifyUserError::Unavailable(e)),
            Err(e) => Err(NotifyUserError::Unknown(e.into())),
        }
    }

    /// Sends a test notification now to each of the caller's devices (the
    /// [`TEST_PUSH_MAX_DEVICES`] most recently seen: the phone being wired
    /// up is the one that registered last) and reports what happened on
    /// each; dead tokens are deleted.
    pub async fn send_test(
        &self,
        caller: &VerifiedIdentity,
    ) -> Result<TestPushReport, SendTestPushError> {
        let mut records = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .tokens
                .list_for_user(&caller.uid, after, 100)
                .await
                .map_err(|e| match e {
                    ports::ListPushTokensError::Unavailable(e) => SendTestPushError::Unavailable(e),
                    ports::ListPushTokensError::Unknown(e) => SendTestPushError::Unknown(e),
                })?;
            records.extend(page.items);
            match page.next {
                Some(next) if records.len() < MAX_DEVICES_PER_USER => after = Some(next),
                _ => break,
            }
        }
        let registered = records.len();
        records.sort_by_key(|r| std::cmp::Reverse(r.last_seen_at));
        records.truncate(TEST_PUSH_MAX_DEVICES);
        let message = test_message();
        let limit = Arc::new(tokio::sync::Semaphore::new(TEST_PUSH_CONCURRENCY));
        let mut running = tokio::task::JoinSet::new();
        for (i, record) in records.into_iter().enumerate() {
            let (sender, tokens, message, limit) = (
                self.sender.clone(),
                self.tokens.clone(),
                message.clone(),
                limit.clone(),
            );
            running.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let d = deliver(
                    sender.as_ref(),
                    tokens.as_ref(),
                    &record.token,
                    Some(record.platform),
                    &message,
                )
                .await;
                (i, d)
            });
        }
        let mut results = Vec::new();
        while let Some(joined) = running.join_next().await {
            results.push(joined.map_err(|e| SendTestPushError::Unknown(e.into()))?);
        }
        results.sort_by_key(|(i, _)| *i);
        tracing::info!(uid = %caller.uid, devices = results.len(), registered, "test push sent");
        Ok(TestPushReport {
            skipped: registered - results.len(),
            deliveries: results.into_iter().map(|(_, d)| d).collect(),
        })
    }
}

/// What `POST /api/v1/me/test-push` sends.
pub fn test_message() -> PushMessage {
    PushMessage {
        title: Some("Test notification".into()),
        body: Some("Push notifications work on this device.".into()),
        data: BTreeMap::from([("type".into(), "test_push".into())]),
        high_priority: true,
        sound: Some("default".into()),
        badge: None,
        collapse_key: Some("test_push".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::ProfileDefaults;
    use ports::JobHandler as _;
    use ports::testing::{InMemoryStore, PushOutcome, RecordingJobQueue, RecordingPushSender};

    fn uid(s: &str) -> FirebaseUid {
        FirebaseUid::parse(s).unwrap()
    }

    fn token(s: &str) -> PushToken {
        PushToken::parse(s).unwrap()
    }

    async fn store_with(tokens: &[&str]) -> Arc<InMemoryStore> {
        let store = Arc::new(InMemoryStore::new());
        for t in tokens {
            store
                .register(
                    &uid("ada"),
                    &token(t),
                    Platform::Android,
                    &ProfileDefaults::default(),
                )
                .await
                .unwrap();
        }
        store
    }

    fn ctx(kind: &str, payload: serde_json::Value) -> JobContext {
        JobContext {
            id: JobId::new(),
            kind: kind.into(),
            version: 1,
            payload,
            queue: PUSH_QUEUE.into(),
            attempt: 1,
            max_retries: 3,
            lease: 1,
        }
    }

    fn hello() -> PushMessage {
        PushMessage {
            title: Some("Hi".into()),
            ..PushMessage::default()
        }
    }

    #[tokio::test]
    async fn notify_user_queues_one_job_and_refuses_oversize_messages_up_front() {
        let jobs = Arc::new(RecordingJobQueue::new());
        let push = PushNotifications::new(
            store_with(&[]).await,
            Arc::new(RecordingPushSender::new()),
            jobs.clone(),
        );
        push.notify_user(&uid("ada"), hello()).await.unwrap();
        let queued = jobs.jobs();
        assert_eq!(queued.len(), 1);
        assert_eq!(
            (queued[0].1.kind.as_str(), queued[0].1.queue.as_str()),
            (PushSendJob::KIND, PUSH_QUEUE)
        );
        let big = PushMessage {
            body: Some("x".repeat(5000)),
            ..PushMessage::default()
        };
        assert!(matches!(
            push.notify_user(&uid("ada"), big).await,
            Err(NotifyUserError::TooLarge { max: 4096, .. })
        ));
        assert_eq!(jobs.jobs().len(), 1);
    }

    #[tokio::test]
    async fn the_fan_out_queues_one_unique_device_job_per_token() {
        let store = store_with(&["a", "b", "c"]).await;
        let jobs = Arc::new(RecordingJobQueue::new());
        let fan = FanOutPush::new(store, jobs.clone());
        let job = ctx(
            PushSendJob::KIND,
            serde_json::to_value(PushSendJob {
                uid: uid("ada"),
                message: hello(),
            })
            .unwrap(),
        );
        ports::Typed(Arc::new(fan.clone()))
            .handle(&job)
            .await
            .unwrap();
        // A rerun of the same job adds nothing while those are queued.
        ports::Typed(Arc::new(fan.clone()))
            .handle(&job)
            .await
            .unwrap();
        let queued = jobs.jobs();
        assert_eq!(queued.len(), 3);
        let mut targets: Vec<String> = queued
            .iter()
            .map(|(_, j)| {
                assert_eq!(j.kind, PushDeviceJob::KIND);
                j.payload["token"].as_str().unwrap().to_owned()
            })
            .collect();
        targets.sort();
        assert_eq!(targets, ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn device_jobs_prune_dead_tokens_retry_when_asked_and_give_up_on_refusals() {
        let store = store_with(&["live", "dead", "busy", "quota"]).await;
        let sender = Arc::new(RecordingPushSender::new());
        sender.script(&token("dead"), [PushOutcome::Unregistered]);
        sender.script(
            &token("busy"),
            [PushOutcome::Unavailable {
                retry_after: Some(Duration::from_secs(2)),
            }],
        );
        sender.script(
            &token("quota"),
            [PushOutcome::Rejected {
                code: "QUOTA_EXCEEDED".into(),
            }],
        );
        let h = SendPushToDevice::new(sender.clone(), store.clone());
        let run = |t: &str| {
            ctx(
                PushDeviceJob::KIND,
                serde_json::to_value(PushDeviceJob {
                    uid: uid("ada"),
                    token: token(t),
                    message: hello(),
                })
                .unwrap(),
            )
        };
        ports::Typed(Arc::new(h.clone()))
            .handle(&run("live"))
            .await
            .unwrap();
        ports::Typed(Arc::new(h.clone()))
            .handle(&run("dead"))
            .await
            .unwrap();
        assert_eq!(
            ports::Typed(Arc::new(h.clone()))
                .handle(&run("busy"))
                .await
                .unwrap_err(),
            JobFailure::Retry {
                error: format!(
                    "push provider unavailable (device {})",
                    token("busy").fingerprint()
                ),
                after: Some(Duration::from_secs(2)),
            }
        );
        assert!(matches!(
            ports::Typed(Arc::new(h.clone())).handle(&run("quota")).await.unwrap_err(),
            JobFailure::Permanent { error } if error.contains("QUOTA_EXCEEDED")
        ));
        // The retry succeeds; the dead token is gone, the others stay.
        ports::Typed(Arc::new(h.clone()))
            .handle(&run("busy"))
            .await
            .unwrap();
        let left: Vec<String> = store
            .list_for_user(&uid("ada"), None, 100)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|r| r.token.as_str().to_owned())
            .collect();
        assert_eq!(left, ["live", "busy", "quota"]);
        let sent: Vec<String> = sender
            .sent()
            .into_iter()
            .map(|(t, _)| t.as_str().to_owned())
            .collect();
        assert_eq!(sent, ["live", "busy"]);
    }

    #[tokio::test]
    async fn the_test_push_reports_each_device_most_recently_seen_first() {
        let store = store_with(&["one", "two", "gone"]).await;
        let sender = Arc::new(RecordingPushSender::new());
        sender.script(&token("gone"), [PushOutcome::InvalidToken]);
        let push = PushNotifications::new(
            store.clone(),
            sender.clone(),
            Arc::new(RecordingJobQueue::new()),
        );
        let caller = VerifiedIdentity::new(uid("ada"));
        let report = push.send_test(&caller).await.unwrap();
        assert_eq!(report.skipped, 0);
        let got: Vec<(&str, DeliveryOutcome, Option<&str>)> = report
            .deliveries
            .iter()
            .map(|d| (d.token.as_str(), d.outcome, d.code.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("gone", DeliveryOutcome::Pruned, Some("INVALID_TOKEN")),
                ("two", DeliveryOutcome::Sent, None),
                ("one", DeliveryOutcome::Sent, None),
            ]
        );
        assert_eq!(sender.sent()[0].1, test_message());
        assert_eq!(
            store
                .list_for_user(&uid("ada"), None, 100)
                .await
                .unwrap()
                .items
                .len(),
            2
        );
        // Someone without devices gets an empty report.
        let nobody = VerifiedIdentity::new(uid("nobody"));
        let empty = push.send_test(&nobody).await.unwrap();
        assert!(empty.deliveries.is_empty());
        assert_eq!(empty.skipped, 0);
    }
}

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
            .owned_by(uid.as_str())
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
mod tests;

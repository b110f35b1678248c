//! `push:send` (fan-out to every device of a user) and `push:send-device`
//! (one message to one device): the jobs and their handlers.

use super::*;

/// `push:send`: to every device of one user (fans out to [`PushDeviceJob`]s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushSendJob {
    pub uid: FirebaseUid,
    pub message: PushMessage,
}

impl Job for PushSendJob {
    const KIND: &'static str = "push:send";
    const QUEUE: &'static str = PUSH_QUEUE;
    const VERSION: u16 = 1;
}

/// `push:send-device`: one message to one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushDeviceJob {
    pub uid: FirebaseUid,
    pub token: PushToken,
    pub message: PushMessage,
}

impl Job for PushDeviceJob {
    const KIND: &'static str = "push:send-device";
    const QUEUE: &'static str = PUSH_QUEUE;
    const VERSION: u16 = 1;
}

/// Runs `push:send`: one `push:send-device` job per token of the user. A
/// rerun (the worker died mid-way) enqueues again what is still queued only
/// once (unique per parent job and token); a device whose job already ran
/// may get the message twice — push delivery is at-least-once.
#[derive(Clone)]
pub struct FanOutPush {
    tokens: Arc<dyn PushTokenRepository>,
    jobs: Arc<dyn JobQueue>,
}

impl std::fmt::Debug for FanOutPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOutPush").finish_non_exhaustive()
    }
}

impl FanOutPush {
    pub fn new(tokens: Arc<dyn PushTokenRepository>, jobs: Arc<dyn JobQueue>) -> Self {
        Self { tokens, jobs }
    }
}

#[async_trait]
impl HandleJob for FanOutPush {
    type Job = PushSendJob;

    async fn run(&self, payload: PushSendJob, job: &JobContext) -> Result<(), JobFailure> {
        let mut after = None;
        let mut devices = 0;
        loop {
            let page = self
                .tokens
                .list_for_user(&payload.uid, after, 100)
                .await
                .map_err(|e| JobFailure::retry(format!("cannot list push tokens: {e}")))?;
            for record in page.items {
                if devices == MAX_DEVICES_PER_USER {
                    tracing::warn!(uid = %payload.uid, "more than {MAX_DEVICES_PER_USER} devices; the rest are skipped");
                    break;
                }
                devices += 1;
                let device = PushDeviceJob {
                    uid: payload.uid.clone(),
                    token: record.token.clone(),
                    message: payload.message.clone(),
                };
                let new = NewJob::of(&device)
                    .map_err(|e| JobFailure::permanent(format!("cannot encode the job: {e}")))?
                    .owned_by(payload.uid.as_str())
                    .max_retries(DEVICE_JOB_RETRIES)
                    .timeout(Duration::from_secs(60))
                    .unique(
                        format!("push:{}:{}", job.id, record.token.fingerprint()),
                        Duration::from_secs(3600),
                    );
                match self.jobs.enqueue(new).await {
                    Ok(_) | Err(EnqueueJobError::Duplicate { .. }) => {}
                    Err(e) => {
                        return Err(JobFailure::retry(format!(
                            "cannot enqueue a device job: {e}"
                        )));
                    }
                }
            }
            match page.next {
                Some(next) if devices < MAX_DEVICES_PER_USER => after = Some(next),
                _ => break,
            }
        }
        tracing::info!(uid = %payload.uid, devices, job_id = %job.id, "push fanned out");
        Ok(())
    }
}

/// Runs `push:send-device`: sends, deletes dead tokens, and tells the queue
/// to retry what FCM asks to retry (not before its `Retry-After`).
#[derive(Clone)]
pub struct SendPushToDevice {
    sender: Arc<dyn PushSender>,
    tokens: Arc<dyn PushTokenRepository>,
}

impl std::fmt::Debug for SendPushToDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendPushToDevice").finish_non_exhaustive()
    }
}

impl SendPushToDevice {
    pub fn new(sender: Arc<dyn PushSender>, tokens: Arc<dyn PushTokenRepository>) -> Self {
        Self { sender, tokens }
    }
}

#[async_trait]
impl HandleJob for SendPushToDevice {
    type Job = PushDeviceJob;

    async fn run(&self, payload: PushDeviceJob, _job: &JobContext) -> Result<(), JobFailure> {
        let d = deliver(
            self.sender.as_ref(),
            self.tokens.as_ref(),
            &payload.token,
            None,
            &payload.message,
        )
        .await;
        let token = payload.token.fingerprint();
        match d.outcome {
            DeliveryOutcome::Sent | DeliveryOutcome::Pruned => Ok(()),
            DeliveryOutcome::Unavailable => Err(JobFailure::Retry {
                error: format!("push provider unavailable (device {token})"),
                after: d.retry_after,
            }),
            DeliveryOutcome::Rejected => Err(JobFailure::permanent(format!(
                "push refused: {} (device {token})",
                d.code.as_deref().unwrap_or("rejected")
            ))),
            DeliveryOutcome::TooLarge => Err(JobFailure::permanent(format!(
                "push payload over {} bytes",
                PushMessage::MAX_PAYLOAD_BYTES
            ))),
            DeliveryOutcome::Failed => Err(JobFailure::retry(format!(
                "push send failed (device {token})"
            ))),
        }
    }
}

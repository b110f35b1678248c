//! Socket first, push as fallback: a notification goes to the user's open
//! sockets with a delivery id; if none acknowledges it in time (or the user
//! has none), it goes out through FCM with the same id as its collapse key,
//! so a device never shows it twice.
//!
//! `SocketFirst::notify` queues a `realtime:deliver` job; a worker runs it
//! (the wait for the ack happens there, never in a request).

use crate::push::{NotifyUserError, PUSH_QUEUE, PushNotifications};
use async_trait::async_trait;
use domain::FirebaseUid;
use ports::{
    EnqueueJobError, HandleJob, Job, JobContext, JobFailure, JobId, JobQueue, NewJob, Notification,
    PushMessage, Realtime, SocketDelivery,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// The push data key carrying the delivery id (the app drops a push whose
/// id it already showed from the socket).
pub const DELIVERY_KEY: &str = "delivery";

/// `realtime:deliver`: one notification to one user, socket first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliverJob {
    pub uid: FirebaseUid,
    /// Unique per notification: the ack's id, and the push's collapse key.
    pub delivery: String,
    /// What the sockets get.
    pub notification: Notification,
    /// What the devices get when no socket acknowledged.
    pub push: PushMessage,
}

impl Job for DeliverJob {
    const KIND: &'static str = "realtime:deliver";
    const QUEUE: &'static str = PUSH_QUEUE;
    const VERSION: u16 = 1;
}

/// Queues socket-first deliveries and runs them.
#[derive(Clone)]
pub struct SocketFirst {
    realtime: Arc<dyn Realtime>,
    push: PushNotifications,
    jobs: Arc<dyn JobQueue>,
    ack_wait: Duration,
}

impl std::fmt::Debug for SocketFirst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketFirst")
            .field("ack_wait", &self.ack_wait)
            .finish_non_exhaustive()
    }
}

impl SocketFirst {
    pub fn new(
        realtime: Arc<dyn Realtime>,
        push: PushNotifications,
        jobs: Arc<dyn JobQueue>,
        ack_wait: Duration,
    ) -> Self {
        Self {
            realtime,
            push,
            jobs,
            ack_wait,
        }
    }

    /// Queues the delivery; `None` when the same `delivery` id is already
    /// queued (a use case that retries does not notify twice).
    pub async fn notify(
        &self,
        uid: &FirebaseUid,
        delivery: &str,
        notification: Notification,
        push: PushMessage,
    ) -> Result<Option<JobId>, NotifyUserError> {
        let push = with_delivery(push, delivery);
        if let Err(ports::SendPushError::PayloadTooLarge { size, max }) = push.check_size() {
            return Err(NotifyUserError::TooLarge { size, max });
        }
        let job = DeliverJob {
            uid: uid.clone(),
            delivery: delivery.to_owned(),
            notification,
            push,
        };
        let new = NewJob::of(&job)
            .map_err(|e| NotifyUserError::Unknown(e.into()))?
            .owned_by(uid.as_str())
            .timeout(self.ack_wait + Duration::from_secs(30))
            .unique(format!("deliver:{delivery}"), Duration::from_secs(3600));
        match self.jobs.enqueue(new).await {
            Ok(id) => Ok(Some(id)),
            Err(EnqueueJobError::Duplicate { .. }) => Ok(None),
            Err(EnqueueJobError::Unavailable(e)) => Err(NotifyUserError::Unavailable(e)),
            Err(e) => Err(NotifyUserError::Unknown(e.into())),
        }
    }
}

/// The push as sent: collapsed by the delivery id, which it also carries.
fn with_delivery(mut push: PushMessage, delivery: &str) -> PushMessage {
    push.collapse_key = Some(delivery.to_owned());
    push.data.insert(DELIVERY_KEY.into(), delivery.to_owned());
    push
}

#[async_trait]
impl HandleJob for SocketFirst {
    type Job = DeliverJob;

    async fn run(&self, job: DeliverJob, _ctx: &JobContext) -> Result<(), JobFailure> {
        let outcome = self
            .realtime
            .deliver(&job.uid, &job.delivery, &job.notification, self.ack_wait)
            .await;
        let via = match outcome {
            Ok(SocketDelivery::Acked(after)) => {
                metrics::histogram!("realtime_ack_seconds").record(after.as_secs_f64());
                metrics::counter!("realtime_deliveries_total", "via" => "socket").increment(1);
                tracing::info!(uid = %job.uid, delivery = %job.delivery, ack_ms = after.as_millis() as u64, "delivered over a socket");
                return Ok(());
            }
            Ok(SocketDelivery::Unacknowledged) => "push_unacked",
            Ok(SocketDelivery::Offline) => "push_offline",
            Err(e) => {
                tracing::warn!(error = %e, uid = %job.uid, "socket delivery failed; pushing instead");
                "push_unavailable"
            }
        };
        self.push
            .notify_user(&job.uid, with_delivery(job.push, &job.delivery))
            .await
            .map_err(|e| match e {
                NotifyUserError::TooLarge { .. } => JobFailure::permanent(e.to_string()),
                _ => JobFailure::retry(format!("cannot queue the push: {e}")),
            })?;
        metrics::counter!("realtime_deliveries_total", "via" => via).increment(1);
        tracing::info!(uid = %job.uid, delivery = %job.delivery, via, "delivered through push");
        Ok(())
    }
}

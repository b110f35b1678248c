//! Storing jobs (`ports::JobQueue`) and periodic ticks.

use super::*;

/// How long an owner's set of job ids outlives the due time of the last
/// job added to it (a finished job's id ages out with it).
const OWNER_SET_TTL_MS: i64 = 30 * 86_400 * 1000;

/// How long a periodic tick's claim is kept.
const TICK_CLAIM_TTL_SECS: i64 = 86_400;

impl RedisJobQueue {
    /// Enqueues tick `tick` (a Unix time in seconds) of periodic job `name`:
    /// claiming the tick and storing the job are one atomic step, so a tick
    /// is enqueued once however many processes (or retries after a failed
    /// call) try, and a failed attempt can simply be tried again.
    pub async fn enqueue_tick(
        &self,
        name: &str,
        tick: i64,
        job: NewJob,
    ) -> Result<TickOutcome, EnqueueJobError> {
        Ok(match self.store(job, Some((name, tick))).await? {
            Some(id) => TickOutcome::Enqueued(id),
            None => TickOutcome::AlreadyEnqueued,
        })
    }

    /// Validates and stores `job`, claiming tick `claim` (name, tick) of a
    /// periodic job in the same step if given. `None` when that tick was
    /// already claimed.
    async fn store(
        &self,
        mut job: NewJob,
        claim: Option<(&str, i64)>,
    ) -> Result<Option<JobId>, EnqueueJobError> {
        if job.kind.is_empty() || job.kind.len() > 128 {
            return Err(EnqueueJobError::Invalid(
                "a job kind is 1 to 128 characters".into(),
            ));
        }
        if !valid_queue_name(&job.queue) {
            return Err(EnqueueJobError::Invalid(format!(
                "invalid queue name {:?}",
                job.queue
            )));
        }
        let id = JobId::new();
        let (unique_key, unique_ttl) = match &job.unique {
            Some(u) if !u.key.is_empty() => (u.key.clone(), ms(u.ttl).max(1)),
            Some(_) => return Err(EnqueueJobError::Invalid("empty unique key".into())),
            None => (String::new(), 0),
        };
        let body = Body {
            kind: job.kind.clone(),
            version: job.version,
            queue: job.queue.clone(),
            timeout_ms: u64::try_from(ms(job.timeout)).unwrap_or(0),
            payload: std::mem::take(&mut job.payload),
        }
        .encode();
        let claim_ttl = if claim.is_some() {
            TICK_CLAIM_TTL_SECS
        } else {
            0
        };
        let queue = job.queue.as_str();
        let cron = self.shared_prefix(queue, "cron:");
        let keys = [
            format!("{}{id}", self.job_prefix(queue)),
            self.key(queue, "pending"),
            self.key(queue, "scheduled"),
            format!("{}{}", self.unique_prefix(queue), unique_key),
            self.key(queue, "wake"),
            // A key name is required either way; unused without a claim.
            claim.map_or_else(
                || format!("{cron}-"),
                |(name, tick)| format!("{cron}{name}:{tick}"),
            ),
            self.key(
                queue,
                &format!("owner:{}", job.owner.as_deref().unwrap_or("")),
            ),
        ];
        let run_at = job.run_at.map_or(0, |t| t.timestamp_millis());
        let mut inv = self.inner.scripts.enqueue.prepare_invoke();
        inv.key(&keys[..])
            .arg(id.to_string())
            .arg(&job.queue)
            .arg(run_at)
            .arg(unique_ttl)
            .arg(claim_ttl)
            .arg(body)
            .arg(job.max_retries)
            .arg(&unique_key)
            .arg(job.owner.as_deref().unwrap_or(""))
            .arg(OWNER_SET_TTL_MS);
        let added: i64 = self
            .run_durable_script(&inv, "enqueue")
            .await
            .map_err(|e| match e {
                QueueError::Unavailable(e) => EnqueueJobError::Unavailable(e),
                QueueError::Unknown(e) => EnqueueJobError::Unknown(e),
                QueueError::Invalid(e) => EnqueueJobError::Invalid(e),
            })?;
        if added == 3 {
            // The queue was empty, or the job is scheduled: name the queue
            // (the set of queues lives outside any queue's hash slot).
            self.remember_queue(&job.queue).await.map_err(|e| match e {
                QueueError::Unavailable(e) => EnqueueJobError::Unavailable(e),
                QueueError::Unknown(e) => EnqueueJobError::Unknown(e),
                QueueError::Invalid(e) => EnqueueJobError::Invalid(e),
            })?;
        }
        match added {
            0 => Err(EnqueueJobError::Duplicate { key: unique_key }),
            2 => Ok(None),
            _ => {
                metrics::counter!("jobs_enqueued_total", "queue" => job.queue.clone(), "kind" => job.kind.clone()).increment(1);
                Ok(Some(id))
            }
        }
    }
}

#[async_trait]
impl JobQueue for RedisJobQueue {
    async fn enqueue(&self, job: NewJob) -> Result<JobId, EnqueueJobError> {
        match self.store(job, None).await? {
            Some(id) => Ok(id),
            None => Err(EnqueueJobError::Unknown(anyhow::anyhow!(
                "enqueue without a tick claim reported a claimed tick"
            ))),
        }
    }

    async fn cancel_owned(&self, owner: &str) -> Result<CancelledJobs, CancelJobsError> {
        let classify = |e: QueueError| match e {
            QueueError::Unavailable(e) => CancelJobsError::Unavailable(e),
            QueueError::Unknown(e) => CancelJobsError::Unknown(e),
            QueueError::Invalid(e) => CancelJobsError::Unknown(anyhow::anyhow!(e)),
        };
        let mut done = CancelledJobs::default();
        // One script per queue: each queue's keys share one hash slot.
        for queue in self.queues().await.map_err(classify)? {
            let mut keys = self.keys(&queue, &["pending", "scheduled", "retry", "dead"]);
            keys.push(self.key(&queue, &format!("owner:{owner}")));
            let (cancelled, running): (u64, u64) = self
                .run_script(
                    self.inner
                        .scripts
                        .cancel_owned
                        .key(keys)
                        .arg(self.job_prefix(&queue))
                        .arg(self.unique_prefix(&queue)),
                )
                .await
                .map_err(classify)?;
            done.cancelled += cancelled;
            done.running += running;
        }
        if done.cancelled > 0 {
            metrics::counter!("jobs_cancelled_total").increment(done.cancelled);
        }
        Ok(done)
    }

    async fn owned_jobs(&self, owner: &str) -> Result<Vec<OwnedJob>, CancelJobsError> {
        let classify = |e: QueueError| match e {
            QueueError::Unavailable(e) => CancelJobsError::Unavailable(e),
            QueueError::Unknown(e) => CancelJobsError::Unknown(e),
            QueueError::Invalid(e) => CancelJobsError::Unknown(anyhow::anyhow!(e)),
        };
        let mut owned = Vec::new();
        for queue in self.queues().await.map_err(classify)? {
            let set = self.key(&queue, &format!("owner:{owner}"));
            let ids: Vec<String> = self
                .with_conn(|mut c| async move { c.smembers(set).await })
                .await
                .map_err(classify)?;
            // An owner's set names its own jobs only (a user's few); ids
            // of finished jobs linger until the set ages out, and are
            // skipped here.
            for id in ids.into_iter().take(MAX_OWNED_LISTED) {
                let key = format!("{}{id}", self.job_prefix(&queue));
                let fields: HashMap<String, String> = self
                    .with_conn(|mut c| async move { c.hgetall(key).await })
                    .await
                    .map_err(classify)?;
                let (Some(body), Some(state)) = (Body::from_fields(&fields), fields.get("state"))
                else {
                    continue;
                };
                owned.push(OwnedJob {
                    id,
                    queue: queue.clone(),
                    kind: body.kind,
                    state: state.clone(),
                    payload: body.payload,
                });
            }
        }
        owned.sort_by(|a, b| (&a.queue, &a.id).cmp(&(&b.queue, &b.id)));
        Ok(owned)
    }
}

/// The most jobs of one owner listed per queue.
const MAX_OWNED_LISTED: usize = 10_000;

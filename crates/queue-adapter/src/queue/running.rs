//! What workers do: fetch, heartbeat, complete, fail, recover, forward.

use super::*;

impl RedisJobQueue {
    /// Leases the oldest ready job of `queue` for `lease`.
    pub async fn fetch(
        &self,
        queue: &str,
        lease: Duration,
    ) -> Result<Option<LeasedJob>, QueueError> {
        Ok(self.fetch_many(queue, lease, 1).await?.pop())
    }

    /// Leases up to `max` of the oldest ready jobs of `queue`, in one round
    /// trip. Each lease gets a fresh fencing number ([`LeasedJob::token`]).
    pub async fn fetch_many(
        &self,
        queue: &str,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<LeasedJob>, QueueError> {
        Ok(self.fetch_batch(queue, lease, max).await?.jobs)
    }

    /// Like [`fetch_many`](Self::fetch_many), and says what the queue's
    /// controls held back (paused, at its concurrency cap, or rate limited).
    pub async fn fetch_batch(
        &self,
        queue: &str,
        lease: Duration,
        max: usize,
    ) -> Result<FetchedBatch, QueueError> {
        let keys = self.keys(queue, &["pending", "active", "wake", "control", "throttle"]);
        let prefix = self.job_prefix(queue);
        type Row = (String, u32, u64, String, u32, i64, HashMap<String, String>);
        let (rows, held): (Vec<Row>, i64) = self
            .run_script(
                self.inner
                    .scripts
                    .fetch
                    .key(&keys[..])
                    .arg(ms(lease))
                    .arg(prefix)
                    .arg(max.max(1)),
            )
            .await?;
        let jobs = rows
            .into_iter()
            .map(
                |(id, attempt, token, body, max_retries, ready_at_ms, old)| {
                    let body = if body.is_empty() {
                        Body::from_fields(&old)
                    } else {
                        Body::decode(&body)
                    };
                    // A body that does not decode still runs (and fails in the
                    // worker as an unknown kind), so it reaches the dead set
                    // instead of circling.
                    let body = body.unwrap_or_else(|| Body {
                        kind: String::new(),
                        version: 0,
                        queue: queue.to_owned(),
                        timeout_ms: 0,
                        payload: serde_json::Value::Null,
                    });
                    Ok(LeasedJob {
                        id: parse_id(&id)?,
                        token,
                        queue: queue.to_owned(),
                        kind: body.kind,
                        version: body.version,
                        payload: body.payload,
                        attempt,
                        max_retries,
                        timeout: Duration::from_millis(body.timeout_ms),
                        ready_at_ms,
                    })
                },
            )
            .collect::<Result<_, QueueError>>()?;
        let held_back = match held {
            0 => None,
            -1 => Some(HeldBack::Paused),
            -2 => Some(HeldBack::AtCapacity),
            ms => Some(HeldBack::RateLimited(Duration::from_millis(
                u64::try_from(ms).unwrap_or(1),
            ))),
        };
        Ok(FetchedBatch { jobs, held_back })
    }

    /// Moves due scheduled and retry jobs of `queue` to pending.
    pub async fn forward(&self, queue: &str) -> Result<u64, QueueError> {
        let keys = [
            self.key(queue, "scheduled"),
            self.key(queue, "retry"),
            self.key(queue, "pending"),
            self.key(queue, "wake"),
        ];
        let prefix = self.job_prefix(queue);
        self.run_script(
            self.inner
                .scripts
                .forward
                .key(&keys[..])
                .arg(1000)
                .arg(prefix),
        )
        .await
    }

    /// Extends `leases` (those still held) to now + `lease`. Returns the
    /// leases that are lost: their jobs were recovered, fetched again by
    /// another worker, or deleted, and their handlers should stop.
    pub async fn heartbeat(
        &self,
        queue: &str,
        leases: &[Lease],
        lease: Duration,
    ) -> Result<Vec<Lease>, QueueError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let (active, prefix) = (self.key(queue, "active"), self.job_prefix(queue));
        let args = lease_args(leases);
        let lost: Vec<String> = self
            .run_script(
                self.inner
                    .scripts
                    .heartbeat
                    .key(active)
                    .arg(ms(lease))
                    .arg(prefix)
                    .arg(&args[..]),
            )
            .await?;
        Ok(leases
            .iter()
            .filter(|l| lost.iter().any(|id| *id == l.id.to_string()))
            .copied()
            .collect())
    }

    /// The job succeeded: it is deleted and its unique key released, if
    /// `lease` is still held.
    pub async fn complete(&self, queue: &str, lease: Lease) -> Result<LeaseOutcome, QueueError> {
        Ok(self
            .complete_many(queue, std::slice::from_ref(&lease))
            .await?
            .pop()
            .unwrap_or(LeaseOutcome::LeaseLost))
    }

    /// Completes several jobs of `queue` in one round trip. Returns one
    /// outcome per lease, in order.
    pub async fn complete_many(
        &self,
        queue: &str,
        leases: &[Lease],
    ) -> Result<Vec<LeaseOutcome>, QueueError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.keys(
            queue,
            &["active", "processed", "control", "pending", "wake"],
        );
        let (prefix, uprefix) = (self.job_prefix(queue), self.unique_prefix(queue));
        let args = lease_args(leases);
        let done: Vec<i64> = self
            .run_durable_script(
                self.inner
                    .scripts
                    .complete
                    .key(&keys[..])
                    .arg(prefix)
                    .arg(uprefix)
                    .arg(&args[..]),
                "complete",
            )
            .await?;
        Ok(done
            .into_iter()
            .map(|n| {
                if n == 1 {
                    LeaseOutcome::Applied
                } else {
                    LeaseOutcome::LeaseLost
                }
            })
            .collect())
    }

    /// The attempt failed: retry `retry_after` from now (measured by Redis'
    /// clock), or (with `None`) the job dies. Nothing changes if `lease` is
    /// no longer held.
    pub async fn fail(
        &self,
        queue: &str,
        lease: Lease,
        error: &str,
        retry_after: Option<Duration>,
    ) -> Result<FailOutcome, QueueError> {
        let keys = self.keys(
            queue,
            &[
                "active", "retry", "dead", "failed", "control", "pending", "wake",
            ],
        );
        let (prefix, uprefix) = (self.job_prefix(queue), self.unique_prefix(queue));
        let s = &self.inner.settings;
        let error: String = error.chars().take(4000).collect();
        let n: i64 = self
            .run_script(
                self.inner
                    .scripts
                    .fail
                    .key(&keys[..])
                    .arg(lease.id.to_string())
                    .arg(prefix)
                    .arg(uprefix)
                    .arg(lease.token)
                    .arg(error)
                    .arg(retry_after.map_or(-1, ms))
                    .arg(s.dead_max_size)
                    .arg(ms(s.dead_max_age)),
            )
            .await?;
        Ok(match n {
            1 => FailOutcome::Retry,
            2 => FailOutcome::Dead,
            _ => FailOutcome::LeaseLost,
        })
    }

    /// Sends jobs whose lease ran out back to retry after the backoff
    /// `retry_base * 2^(attempt-1)` (capped at `retry_cap`, equal jitter),
    /// or to the dead set when out of retries; then caps the dead set by
    /// size and age. Returns (retried, dead).
    pub async fn recover(
        &self,
        queue: &str,
        retry_base: Duration,
        retry_cap: Duration,
    ) -> Result<(u64, u64), QueueError> {
        let keys = self.keys(queue, &["active", "retry", "dead", "failed"]);
        let (prefix, uprefix) = (self.job_prefix(queue), self.unique_prefix(queue));
        let s = &self.inner.settings;
        let seed: u32 = rand::random();
        self.run_script(
            self.inner
                .scripts
                .recover
                .key(&keys[..])
                .arg(prefix)
                .arg(uprefix)
                .arg(1000)
                .arg(s.dead_max_size)
                .arg(ms(s.dead_max_age))
                .arg(ms(retry_base))
                .arg(ms(retry_cap))
                .arg(seed),
        )
        .await
    }

    /// Puts an unfinished job back at the front of its queue (shutdown), if
    /// `lease` is still held; the attempt does not count.
    pub async fn requeue(&self, queue: &str, lease: Lease) -> Result<LeaseOutcome, QueueError> {
        let keys = [
            self.key(queue, "active"),
            self.key(queue, "pending"),
            self.key(queue, "wake"),
        ];
        let prefix = self.job_prefix(queue);
        let n: i64 = self
            .run_script(
                self.inner
                    .scripts
                    .requeue
                    .key(&keys[..])
                    .arg(lease.id.to_string())
                    .arg(prefix)
                    .arg(lease.token),
            )
            .await?;
        Ok(if n == 1 {
            LeaseOutcome::Applied
        } else {
            LeaseOutcome::LeaseLost
        })
    }

    /// Waits up to `timeout` for a wake-up token on any of `queues` (an
    /// enqueue or a forward pushes one), on a connection of its own. On a
    /// Redis Cluster the queues' wake lists are in different slots, so each
    /// is waited on by a task of its own and the first token ends the wait
    /// (the others end by their timeout, giving back their connection).
    pub async fn wait_for_work(
        &self,
        queues: &[String],
        timeout: Duration,
    ) -> Result<(), QueueError> {
        let keys: Vec<String> = queues.iter().map(|q| self.key(q, "wake")).collect();
        if !self.inner.cluster || keys.len() < 2 {
            return self.blpop(keys, timeout).await;
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(keys.len());
        for key in keys {
            let (me, tx) = (self.clone(), tx.clone());
            tokio::spawn(async move {
                let _ = tx.send(me.blpop(vec![key], timeout).await).await;
            });
        }
        drop(tx);
        let mut outcome = Ok(());
        // Each task ends within `timeout` (plus a reply), so this loop does.
        while let Some(r) = rx.recv().await {
            match r {
                Ok(()) => return Ok(()),
                Err(e) => outcome = Err(e),
            }
        }
        outcome
    }

    async fn blpop(&self, keys: Vec<String>, timeout: Duration) -> Result<(), QueueError> {
        let pool = self.inner.conn.pool();
        let mut conn = pool.blocking().await?;
        let _: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(&keys[..])
            .arg(timeout.as_secs_f64())
            .query_async(&mut conn)
            .await?;
        pool.release(conn);
        Ok(())
    }
}

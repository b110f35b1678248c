//! A queue's controls: pause and resume, a concurrency cap across every
//! worker and a rate limit. They live in the queue's `control` hash, so they
//! survive restarts and every worker's next fetch obeys them (the fetch
//! script reads them; see `scripts::fetch`).

use super::*;

impl RedisJobQueue {
    /// Stops every worker from starting jobs of `queue` (running ones
    /// finish). Returns false if it was already paused.
    pub async fn pause(&self, queue: &str) -> Result<bool, QueueError> {
        let key = self.control_key(queue)?;
        let set: bool = self
            .with_conn(|mut c| async move { c.hset_nx(key, "paused", now_ms()).await })
            .await?;
        self.remember_queue(queue).await?;
        Ok(set)
    }

    /// Lets workers start jobs of `queue` again, waking idle ones. Returns
    /// false if it was not paused.
    pub async fn resume(&self, queue: &str) -> Result<bool, QueueError> {
        let _ = self.control_key(queue)?;
        let keys = self.keys(queue, &["control", "pending", "wake"]);
        let n: i64 = self
            .run_script(&self.inner.scripts.resume.key(&keys[..]))
            .await?;
        Ok(n == 1)
    }

    /// Caps the jobs of `queue` running at once across every worker
    /// (`None`: no cap). A cap below the jobs running now lets those finish.
    pub async fn set_concurrency(&self, queue: &str, cap: Option<u32>) -> Result<(), QueueError> {
        let key = self.control_key(queue)?;
        match cap {
            Some(n) if n > 0 => {
                self.with_conn(|mut c| async move {
                    c.hset::<_, _, _, ()>(key, "concurrency", n).await
                })
                .await?;
            }
            _ => {
                self.with_conn(|mut c| async move { c.hdel::<_, _, ()>(key, "concurrency").await })
                    .await?;
            }
        }
        self.remember_queue(queue).await
    }

    /// Limits how many jobs of `queue` start per period, across every worker
    /// (`None`: no limit). Jobs over the limit wait in the queue; none fails.
    pub async fn set_rate(&self, queue: &str, rate: Option<RateLimit>) -> Result<(), QueueError> {
        let key = self.control_key(queue)?;
        let throttle = self.key(queue, "throttle");
        match rate {
            Some(r) => {
                let items = [
                    ("rate", u64::from(r.jobs)),
                    (
                        "period_ms",
                        u64::try_from(r.per.as_millis()).unwrap_or(u64::MAX),
                    ),
                ];
                self.with_conn(|mut c| async move {
                    redis::pipe()
                        .hset_multiple(key, &items)
                        .del(throttle)
                        .query_async::<()>(&mut c)
                        .await
                })
                .await?;
            }
            None => {
                self.with_conn(|mut c| async move {
                    redis::pipe()
                        .hdel(key, &["rate", "period_ms"])
                        .del(throttle)
                        .query_async::<()>(&mut c)
                        .await
                })
                .await?;
            }
        }
        self.remember_queue(queue).await
    }

    /// The controls of `queue` as stored.
    pub async fn controls(&self, queue: &str) -> Result<QueueControls, QueueError> {
        let key = self.control_key(queue)?;
        let f: (Option<i64>, Option<u32>, Option<u32>, Option<u64>) = self
            .with_conn(|mut c| async move {
                redis::cmd("HMGET")
                    .arg(key)
                    .arg(&["paused", "concurrency", "rate", "period_ms"])
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let (paused_since_ms, concurrency, rate, period_ms) = f;
        Ok(QueueControls {
            paused_since_ms,
            concurrency,
            rate: rate.zip(period_ms).map(|(jobs, per)| RateLimit {
                jobs,
                per: Duration::from_millis(per),
            }),
        })
    }

    /// The control hash of `queue`, which must be a valid queue name.
    pub(super) fn control_key(&self, queue: &str) -> Result<String, QueueError> {
        if !valid_queue_name(queue) {
            return Err(QueueError::Invalid(format!(
                "invalid queue name {queue:?}: 1 to 64 of a-z, 0-9, _ and -"
            )));
        }
        Ok(self.key(queue, "control"))
    }

    /// Lists `queue` among the queues (a queue may be controlled before its
    /// first job).
    pub(super) async fn remember_queue(&self, queue: &str) -> Result<(), QueueError> {
        let key = self.queues_key();
        self.with_conn(|mut c| async move { c.sadd::<_, _, ()>(key, queue).await })
            .await
    }
}

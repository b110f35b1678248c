//! What `app jobs` does: stats, dead jobs, revive, delete.

use super::*;

impl RedisJobQueue {
    /// Every queue that ever had a job.
    pub async fn queues(&self) -> Result<Vec<String>, QueueError> {
        let key = self.queues_key();
        let mut names: Vec<String> = self
            .with_conn(|mut c| async move { c.smembers(key).await })
            .await?;
        names.sort();
        Ok(names)
    }

    pub async fn stats(&self, queue: &str) -> Result<QueueStats, QueueError> {
        let mut pipe = redis::pipe();
        pipe.llen(self.key(queue, "pending"))
            .zcard(self.key(queue, "scheduled"))
            .zcard(self.key(queue, "active"))
            .zcard(self.key(queue, "retry"))
            .zcard(self.key(queue, "dead"))
            .get(self.key(queue, "processed"))
            .get(self.key(queue, "failed"))
            .hexists(self.key(queue, "control"), "paused");
        type Row = (u64, u64, u64, u64, u64, Option<u64>, Option<u64>, bool);
        let (pending, scheduled, active, retry, dead, processed, failed, paused): Row = self
            .with_conn(|mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        Ok(QueueStats {
            queue: queue.to_owned(),
            pending,
            scheduled,
            active,
            retry,
            dead,
            processed: processed.unwrap_or(0),
            failed: failed.unwrap_or(0),
            paused,
        })
    }

    /// The most recent dead jobs of `queue` (or of every queue).
    pub async fn dead(
        &self,
        queue: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadJob>, QueueError> {
        let queues = match queue {
            Some(q) => vec![q.to_owned()],
            None => self.queues().await?,
        };
        let mut out = Vec::new();
        for q in queues {
            let key = self.key(&q, "dead");
            let lim = isize::try_from(limit).unwrap_or(isize::MAX).max(1) - 1;
            let ids: Vec<(String, f64)> = self
                .with_conn(|mut c| async move { c.zrevrange_withscores(key, 0, lim).await })
                .await?;
            for (id, died) in ids {
                let key = format!("{}{id}", self.job_prefix(&q));
                let h: HashMap<String, String> = self
                    .with_conn(|mut c| async move { c.hgetall(key).await })
                    .await?;
                let get = |k: &str| h.get(k).cloned().unwrap_or_default();
                let body = Body::from_fields(&h);
                out.push(DeadJob {
                    id,
                    queue: q.clone(),
                    kind: body.as_ref().map(|b| b.kind.clone()).unwrap_or_default(),
                    attempts: get("attempt").parse().unwrap_or(0),
                    last_error: get("last_error"),
                    died_at_ms: died as i64,
                    payload: body.map(|b| b.payload.to_string()).unwrap_or_default(),
                });
            }
        }
        out.sort_by_key(|d| std::cmp::Reverse(d.died_at_ms));
        out.truncate(limit);
        Ok(out)
    }

    /// The queue job `id` is in. On one Redis its hash says; on a cluster
    /// each queue keeps its jobs in its own slot, so each queue is asked.
    pub(super) async fn queue_of(&self, id: &str) -> Result<Option<String>, QueueError> {
        let mut candidates = vec![None];
        if self.inner.cluster {
            candidates = self.queues().await?.into_iter().map(Some).collect();
        }
        for queue in candidates {
            let key = format!("{}{id}", self.job_prefix(queue.as_deref().unwrap_or("")));
            let fields: HashMap<String, String> = self
                .with_conn(|mut c| async move { c.hgetall(key).await })
                .await?;
            if let Some(body) = Body::from_fields(&fields) {
                return Ok(Some(body.queue));
            }
        }
        Ok(None)
    }

    /// Runs a dead job again with fresh retries. Returns false if `id` is not dead.
    ///
    /// Its unique key (released when it died) is taken again if it is free.
    /// If a newer job holds it meanwhile, the revived job still runs (the
    /// operator asked for it) but without the key, and it never releases
    /// the newer job's key.
    pub async fn revive(&self, id: &str) -> Result<bool, QueueError> {
        self.on_job(&self.inner.scripts.revive, id, &["dead", "pending", "wake"])
            .await
    }

    /// Revives every dead job of `queue` (or of every queue). Returns how many.
    pub async fn revive_all(&self, queue: Option<&str>) -> Result<u64, QueueError> {
        let queues = match queue {
            Some(q) => vec![q.to_owned()],
            None => self.queues().await?,
        };
        // Bounded: at most the dead set's cap per queue and call.
        let last = isize::try_from(self.inner.settings.dead_max_size)
            .unwrap_or(isize::MAX)
            .max(1)
            - 1;
        let mut n = 0;
        for q in queues {
            let key = self.key(&q, "dead");
            let ids: Vec<String> = self
                .with_conn(|mut c| async move { c.zrange(key, 0, last).await })
                .await?;
            for id in ids {
                if self.revive(&id).await? {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Deletes a job wherever it is. Returns false if there was none.
    pub async fn delete(&self, id: &str) -> Result<bool, QueueError> {
        let wheres = ["pending", "scheduled", "retry", "active", "dead"];
        self.on_job(&self.inner.scripts.delete, id, &wheres).await
    }

    /// Runs `script` on job `id` with the keys `wheres` of its queue; false
    /// if there is no such job or the script did not apply.
    pub(super) async fn on_job(
        &self,
        script: &redis::Script,
        id: &str,
        wheres: &[&str],
    ) -> Result<bool, QueueError> {
        let Some(queue) = self.queue_of(id).await? else {
            return Ok(false);
        };
        let n: i64 = self
            .run_script(
                script
                    .key(self.keys(&queue, wheres))
                    .arg(id)
                    .arg(self.job_prefix(&queue))
                    .arg(self.unique_prefix(&queue)),
            )
            .await?;
        Ok(n == 1)
    }
}

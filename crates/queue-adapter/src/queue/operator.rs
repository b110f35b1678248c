//! What an operator does to single jobs and kinds of jobs: look at one,
//! run one now, list and revive by kind; and `ports::QueueAdmin`, the port
//! the ops console drives.

use super::listing::cursor_after;
use super::*;

/// Pages of a listing read at most to fill one page of one kind.
const KIND_SCAN_PAGES: usize = 20;

impl RedisJobQueue {
    /// Job `id` in full, wherever it is; `None` when there is none.
    pub async fn job(&self, id: &str) -> Result<Option<JobDetail>, QueueError> {
        let Some(queue) = self.queue_of(id).await? else {
            return Ok(None);
        };
        let key = format!("{}{id}", self.job_prefix(&queue));
        let h: HashMap<String, String> = self
            .with_conn(|mut c| async move { c.hgetall(key).await })
            .await?;
        let Some(body) = Body::from_fields(&h) else {
            return Ok(None);
        };
        let state = match h.get("state").map(|s| s.parse::<JobState>()) {
            Some(Ok(s)) => s,
            _ => return Ok(None),
        };
        let num = |k: &str| h.get(k).and_then(|v| v.parse::<i64>().ok());
        let small = |k: &str| num(k).and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
        let at_ms = if state == JobState::Pending {
            num("ready_at")
        } else {
            let set = self.key(&queue, state.as_str());
            let member = id.to_owned();
            let score: Option<f64> = self
                .with_conn(|mut c| async move { c.zscore(set, member).await })
                .await?;
            score.map(|s| s as i64)
        };
        Ok(Some(JobDetail {
            summary: JobSummary {
                id: id.to_owned(),
                queue,
                state,
                kind: body.kind,
                attempts: small("attempt"),
                max_retries: small("max_retries"),
                at_ms: at_ms.unwrap_or(0),
                last_error: h.get("last_error").cloned(),
                payload: body.payload,
            },
            version: body.version,
            timeout_ms: body.timeout_ms,
            ready_at_ms: num("ready_at"),
            failed_at_ms: num("failed_at"),
            unique_key: h.get("unique_key").filter(|k| !k.is_empty()).cloned(),
        }))
    }

    /// Jobs processed and failed in each of the last `minutes` minutes
    /// (by Redis' clock), oldest first; the current minute is the last.
    pub async fn throughput(
        &self,
        queue: &str,
        minutes: usize,
    ) -> Result<Vec<ports::MinuteCount>, QueueError> {
        let minutes = minutes.clamp(1, 60);
        let (processed, failed) = (self.key(queue, "processed"), self.key(queue, "failed"));
        self.with_conn(|mut c| async move {
            let (secs, _micros): (i64, i64) = redis::cmd("TIME").query_async(&mut c).await?;
            let now = secs / 60;
            let span: Vec<i64> = (0..minutes as i64).rev().map(|back| now - back).collect();
            let keys = |counter: &str| -> Vec<String> {
                span.iter().map(|m| format!("{counter}:{m}")).collect()
            };
            let done: Vec<Option<u64>> = c.mget(keys(&processed)).await?;
            let bad: Vec<Option<u64>> = c.mget(keys(&failed)).await?;
            Ok(span
                .iter()
                .zip(done.into_iter().zip(bad))
                .map(|(m, (p, f))| ports::MinuteCount {
                    minute_ms: m * 60_000,
                    processed: p.unwrap_or(0),
                    failed: f.unwrap_or(0),
                })
                .collect())
        })
        .await
    }

    /// Runs a scheduled job, or one waiting for its retry, now. False when
    /// it is neither.
    pub async fn run_now(&self, id: &str) -> Result<bool, QueueError> {
        let wheres = ["scheduled", "retry", "pending", "wake"];
        self.on_job(&self.inner.scripts.run_now, id, &wheres).await
    }

    /// Like [`list`](Self::list), only jobs of `kind`: reads pages until one
    /// is full, the state is done, or [`KIND_SCAN_PAGES`] pages were read
    /// (the cursor then goes on from there).
    pub async fn list_of_kind(
        &self,
        queue: &str,
        state: JobState,
        kind: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage, QueueError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut jobs = Vec::new();
        let mut cursor = cursor.map(str::to_owned);
        for _ in 0..KIND_SCAN_PAGES {
            let page = self.list(queue, state, cursor.as_deref(), MAX_PAGE).await?;
            for job in page.jobs {
                if job.kind != kind {
                    continue;
                }
                let after = cursor_after(state, &job.id, job.at_ms);
                jobs.push(job);
                if jobs.len() == limit {
                    return Ok(JobPage {
                        jobs,
                        next: Some(after),
                    });
                }
            }
            if page.next.is_none() {
                return Ok(JobPage { jobs, next: None });
            }
            cursor = page.next;
        }
        Ok(JobPage { jobs, next: cursor })
    }

    /// Revives every dead job of `kind` in `queue` (at most the dead set's
    /// cap per call). Returns how many.
    pub async fn revive_kind(&self, queue: &str, kind: &str) -> Result<u64, QueueError> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        let pages = usize::try_from(self.inner.settings.dead_max_size)
            .unwrap_or(usize::MAX)
            .div_ceil(MAX_PAGE)
            .max(1);
        for _ in 0..pages {
            let page = self
                .list(queue, JobState::Dead, cursor.as_deref(), MAX_PAGE)
                .await?;
            ids.extend(
                page.jobs
                    .into_iter()
                    .filter(|j| j.kind == kind)
                    .map(|j| j.id),
            );
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let mut n = 0;
        for id in ids {
            if self.revive(&id).await? {
                n += 1;
            }
        }
        Ok(n)
    }
}
impl From<QueueError> for ports::AdminError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Unavailable(e) => Self::Unavailable(e),
            QueueError::Unknown(e) => Self::Unknown(e),
            QueueError::Invalid(e) => Self::Invalid(e),
        }
    }
}

#[async_trait]
impl ports::QueueAdmin for RedisJobQueue {
    async fn overview(&self) -> Result<Vec<ports::QueueOverview>, ports::AdminError> {
        let mut out = Vec::new();
        for name in self.queues().await? {
            out.push(ports::QueueOverview {
                stats: self.stats(&name).await?,
                controls: self.controls(&name).await?,
                last_hour: self.throughput(&name, 60).await?,
            });
        }
        Ok(out)
    }

    async fn jobs(
        &self,
        queue: &str,
        state: JobState,
        kind: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage, ports::AdminError> {
        Ok(match kind.filter(|k| !k.is_empty()) {
            Some(kind) => self.list_of_kind(queue, state, kind, cursor, limit).await?,
            None => self.list(queue, state, cursor, limit).await?,
        })
    }

    async fn job(&self, id: &str) -> Result<Option<JobDetail>, ports::AdminError> {
        Ok(RedisJobQueue::job(self, id).await?)
    }

    async fn retry_dead_of_kind(&self, queue: &str, kind: &str) -> Result<u64, ports::AdminError> {
        Ok(self.revive_kind(queue, kind).await?)
    }

    async fn run_now(&self, id: &str) -> Result<bool, ports::AdminError> {
        Ok(RedisJobQueue::run_now(self, id).await?)
    }

    async fn retry(&self, id: &str) -> Result<bool, ports::AdminError> {
        Ok(self.revive(id).await?)
    }

    async fn delete(&self, id: &str) -> Result<bool, ports::AdminError> {
        Ok(RedisJobQueue::delete(self, id).await?)
    }

    async fn pause(&self, queue: &str) -> Result<bool, ports::AdminError> {
        Ok(RedisJobQueue::pause(self, queue).await?)
    }

    async fn resume(&self, queue: &str) -> Result<bool, ports::AdminError> {
        Ok(RedisJobQueue::resume(self, queue).await?)
    }
}

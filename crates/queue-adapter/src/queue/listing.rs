//! The jobs of one queue in one state, a page at a time.
//!
//! Pending jobs are listed oldest first (the order they start in), the
//! scheduled, retry and active sets soonest first, the dead set newest first.
//! A cursor names the last job of a page: for pending jobs its id (the next
//! page is what is queued behind it; if it started meanwhile, every job
//! ahead of it started too, and the next page begins at the queue's head),
//! for the sorted sets its score and id (the order is by score, then id).
//! Jobs move while an operator pages, so a job can appear on two pages or
//! on none if it changed state in between; it is never listed twice on one.

use super::*;

/// Most jobs on one page.
pub const MAX_PAGE: usize = 500;

/// Members of a sorted set read per step while skipping ties of the cursor's score.
const TIE_STEP: usize = 200;
/// Steps at most per page, so one call is bounded however many ties there are.
const TIE_STEPS: usize = 50;

#[derive(Debug, Clone, PartialEq)]
enum Cursor {
    Start,
    After(String),
    AfterScored(i64, String),
}

impl Cursor {
    fn parse(state: JobState, cursor: Option<&str>) -> Result<Self, QueueError> {
        let bad = || QueueError::Invalid(format!("not a cursor of {} jobs", state.as_str()));
        let Some(c) = cursor.filter(|c| !c.is_empty()) else {
            return Ok(Self::Start);
        };
        match (state, c.split_once(':')) {
            (JobState::Pending, Some(("p", id))) if !id.is_empty() && id.len() <= 64 => {
                Ok(Self::After(id.to_owned()))
            }
            (JobState::Pending, _) => Err(bad()),
            (_, Some(("z", rest))) => {
                let (score, id) = rest.split_once(':').ok_or_else(bad)?;
                let score = score.parse().map_err(|_| bad())?;
                if id.is_empty() || id.len() > 64 {
                    return Err(bad());
                }
                Ok(Self::AfterScored(score, id.to_owned()))
            }
            _ => Err(bad()),
        }
    }
}

/// The cursor of the page that follows job `id` (whose score is `score`
/// in a sorted set).
pub(crate) fn cursor_after(state: JobState, id: &str, score: i64) -> String {
    match state {
        JobState::Pending => format!("p:{id}"),
        _ => format!("z:{score}:{id}"),
    }
}

impl RedisJobQueue {
    /// Up to `limit` (at most [`MAX_PAGE`]) jobs of `queue` in `state`,
    /// after `cursor` (a previous page's `next`; `None` for the first page).
    pub async fn list(
        &self,
        queue: &str,
        state: JobState,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage, QueueError> {
        let _ = self.control_key(queue)?;
        let limit = limit.clamp(1, MAX_PAGE);
        let cursor = Cursor::parse(state, cursor)?;
        let key = self.key(queue, state.as_str());
        // One more than a page tells whether another page follows.
        let (mut entries, more) = match state {
            JobState::Pending => self.pending_page(&key, &cursor, limit).await?,
            JobState::Dead => self.scored_page(&key, &cursor, limit, true).await?,
            _ => self.scored_page(&key, &cursor, limit, false).await?,
        };
        entries.truncate(limit);
        let mut pipe = redis::pipe();
        for (id, _) in &entries {
            pipe.hgetall(format!("{}{id}", self.job_prefix(queue)));
        }
        let hashes: Vec<HashMap<String, String>> = if entries.is_empty() {
            Vec::new()
        } else {
            self.with_conn(|mut c| async move { pipe.query_async(&mut c).await })
                .await?
        };
        let next = match (more, entries.last()) {
            (true, Some((id, score))) => Some(cursor_after(state, id, score.unwrap_or(0))),
            _ => None,
        };
        let jobs = entries
            .into_iter()
            .zip(hashes)
            // Deleted or finished between the two reads: not listed.
            .filter(|(_, h)| !h.is_empty())
            .map(|((id, score), h)| {
                let body = Body::from_fields(&h);
                let num = |k: &str| h.get(k).and_then(|v| v.parse::<i64>().ok());
                let small = |k: &str| num(k).and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
                JobSummary {
                    id,
                    queue: queue.to_owned(),
                    state,
                    kind: body.as_ref().map(|b| b.kind.clone()).unwrap_or_default(),
                    attempts: small("attempt"),
                    max_retries: small("max_retries"),
                    at_ms: score.or_else(|| num("ready_at")).unwrap_or(0),
                    last_error: h.get("last_error").cloned(),
                    payload: body.map(|b| b.payload).unwrap_or_default(),
                }
            })
            .collect();
        Ok(JobPage { jobs, next })
    }

    /// Pending ids behind `cursor`, oldest first (the list's tail is its head).
    async fn pending_page(
        &self,
        key: &str,
        cursor: &Cursor,
        limit: usize,
    ) -> Result<(Vec<(String, Option<i64>)>, bool), QueueError> {
        let key = key.to_owned();
        let want = isize::try_from(limit).unwrap_or(isize::MAX) + 1;
        let after = match cursor {
            Cursor::After(id) => Some(id.clone()),
            _ => None,
        };
        let ids: Vec<String> = self
            .with_conn(|mut c| async move {
                let pos: Option<isize> = match after {
                    Some(id) => {
                        redis::cmd("LPOS")
                            .arg(&key)
                            .arg(id)
                            .query_async(&mut c)
                            .await?
                    }
                    None => None,
                };
                match pos {
                    // Everything left of the cursor's job is queued behind it.
                    Some(0) => Ok(Vec::new()),
                    Some(p) => c.lrange(&key, (p - want).max(0), p - 1).await,
                    None => c.lrange(&key, -want, -1).await,
                }
            })
            .await?;
        let more = ids.len() > limit;
        Ok((ids.into_iter().rev().map(|id| (id, None)).collect(), more))
    }

    /// Members of a sorted set after `cursor` in (score, id) order, or in
    /// reverse order when `newest_first`.
    async fn scored_page(
        &self,
        key: &str,
        cursor: &Cursor,
        limit: usize,
        newest_first: bool,
    ) -> Result<(Vec<(String, Option<i64>)>, bool), QueueError> {
        let (from, after): (String, Option<(i64, String)>) = match cursor {
            Cursor::AfterScored(s, id) => (s.to_string(), Some((*s, id.clone()))),
            _ if newest_first => ("+inf".into(), None),
            _ => ("-inf".into(), None),
        };
        let to = if newest_first { "-inf" } else { "+inf" };
        let mut out = Vec::new();
        let mut exhausted = true;
        for step in 0..TIE_STEPS {
            let mut cmd = redis::cmd("ZRANGE");
            cmd.arg(key).arg(&from).arg(to).arg("BYSCORE");
            if newest_first {
                cmd.arg("REV");
            }
            cmd.arg("LIMIT")
                .arg(step * TIE_STEP)
                .arg(TIE_STEP)
                .arg("WITHSCORES");
            let batch: Vec<(String, f64)> = self
                .with_conn(|mut c| async move { cmd.query_async(&mut c).await })
                .await?;
            let last_batch = batch.len() < TIE_STEP;
            for (id, score) in batch {
                let score = score as i64;
                let past_cursor = match &after {
                    None => true,
                    Some((s, cid)) if newest_first => score < *s || (score == *s && id < *cid),
                    Some((s, cid)) => score > *s || (score == *s && id > *cid),
                };
                if past_cursor {
                    out.push((id, Some(score)));
                    if out.len() > limit {
                        return Ok((out, true));
                    }
                }
            }
            if last_batch {
                exhausted = false;
                break;
            }
        }
        // Steps ran out among ties: what was found is a page, and more follow.
        let more = out.len() > limit || (exhausted && !out.is_empty());
        Ok((out, more))
    }
}

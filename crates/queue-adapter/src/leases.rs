//! The leases a worker process holds, and the heartbeat that keeps them.
//!
//! A lease is held from the fetch until its outcome is persisted (for a
//! success, until the batched completion is written), by a [`HeldLease`]
//! guard: dropping the guard, on any path including a panic, stops the
//! heartbeat for it, so a lease can never be extended forever by a job
//! nobody runs. A heartbeat that finds a lease lost (recovered, fetched
//! again elsewhere, or deleted) cancels that job's handler.

use crate::queue::{Lease, RedisJobQueue};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One held lease.
struct Entry {
    /// The job's queue (heartbeats are sent per queue).
    queue: String,
    /// Cancelled when the lease is found lost: the handler stops.
    lost: CancellationToken,
    /// The handler has returned; only its outcome is still being recorded.
    finished: bool,
}

/// Every lease this process holds. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Held {
    inner: Arc<Mutex<HashMap<Lease, Entry>>>,
}

impl Held {
    fn lock(&self) -> MutexGuard<'_, HashMap<Lease, Entry>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts heartbeating `lease` until the returned guard is dropped.
    pub(crate) fn hold(&self, queue: &str, lease: Lease) -> HeldLease {
        let lost = CancellationToken::new();
        self.lock().insert(
            lease,
            Entry {
                queue: queue.to_owned(),
                lost: lost.clone(),
                finished: false,
            },
        );
        HeldLease {
            held: self.clone(),
            lease,
            lost,
        }
    }

    pub(crate) fn by_queue(&self) -> HashMap<String, Vec<Lease>> {
        let mut by_queue: HashMap<String, Vec<Lease>> = HashMap::new();
        for (lease, e) in self.lock().iter() {
            by_queue.entry(e.queue.clone()).or_default().push(*lease);
        }
        by_queue
    }

    /// `lease` is lost: stop heartbeating it and cancel its handler. Returns
    /// whether its handler was still running, or `None` if it was no longer
    /// held (so each loss is reported once).
    fn lose(&self, lease: &Lease) -> Option<bool> {
        let entry = self.lock().remove(lease)?;
        entry.lost.cancel();
        Some(!entry.finished)
    }
}

/// A lease this process holds; dropping it stops the heartbeat for it.
pub(crate) struct HeldLease {
    held: Held,
    lease: Lease,
    lost: CancellationToken,
}

impl HeldLease {
    pub(crate) fn lease(&self) -> Lease {
        self.lease
    }

    /// Cancelled when a heartbeat finds the lease lost.
    pub(crate) fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// The handler has returned: a lease lost from now on is reported by
    /// the state change that records the outcome, not by the heartbeat.
    pub(crate) fn finished(&self) {
        if let Some(e) = self.held.lock().get_mut(&self.lease) {
            e.finished = true;
        }
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.held.lock().remove(&self.lease);
    }
}

/// Extends every held lease each third of `lease`; cancels the handlers of
/// leases found lost.
pub(crate) async fn heartbeat(
    queue: RedisJobQueue,
    lease: Duration,
    held: Held,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(lease / 3) => {}
            () = stop.cancelled() => return,
        }
        for (q, leases) in held.by_queue() {
            match queue.heartbeat(&q, &leases, lease).await {
                Ok(lost) => {
                    for l in lost {
                        match held.lose(&l) {
                            Some(true) => {
                                metrics::counter!("jobs_lease_lost_total", "queue" => q.clone(), "stage" => "running").increment(1);
                                tracing::warn!(job_id = %l.id, lease = l.token, queue = %q, "lease lost (the job was recovered or fetched again); cancelling its handler");
                            }
                            Some(false) => {
                                tracing::debug!(job_id = %l.id, lease = l.token, "lease lost while recording the outcome");
                            }
                            None => {}
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(queue = %q, jobs = leases.len(), error = %e, "heartbeat failed; leases may expire");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ports::JobId;

    #[test]
    fn a_dropped_guard_stops_the_heartbeat_even_when_unwinding() {
        let held = Held::default();
        let lease = Lease {
            id: JobId::new(),
            token: 1,
        };
        let guard = held.hold("default", lease);
        assert_eq!(held.by_queue()["default"], [lease]);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _guard = guard;
            panic!("outside the handler");
        }));
        assert!(r.is_err());
        assert!(held.by_queue().is_empty());
    }

    #[test]
    fn a_lost_lease_cancels_its_handler_and_is_reported_once() {
        let held = Held::default();
        let lease = Lease {
            id: JobId::new(),
            token: 7,
        };
        let guard = held.hold("default", lease);
        assert_eq!(held.lose(&lease), Some(true));
        assert!(guard.lost().is_cancelled());
        assert_eq!(held.lose(&lease), None, "reported once");
        assert!(held.by_queue().is_empty(), "no longer heartbeated");
    }
}

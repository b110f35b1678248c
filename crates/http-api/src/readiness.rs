//! Readiness from a cached check: one check of every dependency at most
//! once per `interval`, shared by every caller, so a flood of `/readyz`
//! costs the dependencies nothing more than one kubelet does.
//!
//! A caller within `interval` of the last check gets its result. Past that,
//! the first caller starts a check (on its own task, so a caller that gives
//! up does not cancel it) and every caller until it ends waits for the same
//! one. No result older than `interval` is ever served.

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared, join_all};
use ports::HealthProbe;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What one check found: each dependency and whether it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessReport {
    pub checks: BTreeMap<String, bool>,
}

impl ReadinessReport {
    /// The dependencies that did not answer.
    pub fn down(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|(_, ok)| !**ok)
            .map(|(name, _)| name.as_str())
            .collect()
    }
}

type Check = Shared<BoxFuture<'static, Arc<ReadinessReport>>>;

#[derive(Default)]
struct Cached {
    last: Option<(Instant, Arc<ReadinessReport>)>,
    running: Option<Check>,
}

struct Inner {
    probes: Vec<Arc<dyn HealthProbe>>,
    /// How long each dependency may take to answer.
    timeout: Duration,
    /// How long a result is served before a new check is made.
    interval: Duration,
    cached: Mutex<Cached>,
}

/// The process's readiness, checked at most once per interval.
#[derive(Clone)]
pub struct Readiness {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field(
                "probes",
                &self
                    .inner
                    .probes
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>(),
            )
            .field("timeout", &self.inner.timeout)
            .field("interval", &self.inner.interval)
            .finish_non_exhaustive()
    }
}

impl Readiness {
    /// Checks `probes` concurrently, each within `timeout`, at most once per
    /// `interval`.
    pub fn new(probes: Vec<Arc<dyn HealthProbe>>, timeout: Duration, interval: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                probes,
                timeout,
                interval,
                cached: Mutex::new(Cached::default()),
            }),
        }
    }

    /// The latest result no older than the interval, checking first if
    /// there is none.
    pub async fn report(&self) -> Arc<ReadinessReport> {
        let check = {
            let Ok(mut cached) = self.inner.cached.lock() else {
                // A panic while holding the lock: check without the cache.
                return Arc::new(check_all(&self.inner).await);
            };
            if let Some((at, report)) = &cached.last
                && at.elapsed() < self.inner.interval
            {
                return report.clone();
            }
            match &cached.running {
                Some(check) => check.clone(),
                None => {
                    let check = self.start_check();
                    cached.running = Some(check.clone());
                    check
                }
            }
        };
        check.await
    }

    fn start_check(&self) -> Check {
        let inner = self.inner.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let report = Arc::new(check_all(&inner).await);
            if let Ok(mut cached) = inner.cached.lock() {
                cached.last = Some((started, report.clone()));
                cached.running = None;
            }
            report
        });
        let inner = self.inner.clone();
        async move {
            task.await.unwrap_or_else(|_| {
                // The check panicked: report every dependency down, and let
                // the next caller try again.
                if let Ok(mut cached) = inner.cached.lock() {
                    cached.running = None;
                }
                Arc::new(ReadinessReport {
                    checks: inner
                        .probes
                        .iter()
                        .map(|p| (p.name().to_owned(), false))
                        .collect(),
                })
            })
        }
        .boxed()
        .shared()
    }
}

async fn check_all(inner: &Inner) -> ReadinessReport {
    let timeout = inner.timeout;
    let results = join_all(inner.probes.iter().map(|probe| async move {
        let ok = match tokio::time::timeout(timeout, probe.check()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(dependency = probe.name(), error = %format!("{:#}", anyhow::Error::from(e)), "readiness check failed");
                false
            }
            Err(_) => {
                tracing::warn!(dependency = probe.name(), timeout_ms = timeout.as_millis() as u64, "readiness check timed out");
                false
            }
        };
        (probe.name().to_owned(), ok)
    }))
    .await;
    ReadinessReport {
        checks: results.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use ports::ProbeError;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting {
        calls: AtomicUsize,
        delay: Duration,
    }

    #[async_trait]
    impl HealthProbe for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        async fn check(&self) -> Result<(), ProbeError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_thousand_callers_share_one_check_per_interval() {
        let probe = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            delay: Duration::from_millis(20),
        });
        let interval = Duration::from_millis(200);
        let readiness = Readiness::new(vec![probe.clone()], Duration::from_secs(1), interval);
        let started = Instant::now();
        let reports = join_all((0..1000).map(|_| readiness.report())).await;
        assert!(reports.iter().all(|r| r.down().is_empty()));
        assert_eq!(
            probe.calls.load(Ordering::SeqCst),
            1,
            "callers at once share one check"
        );
        // Keep calling for a while: checks stay at one per interval.
        while started.elapsed() < interval * 5 {
            join_all((0..50).map(|_| readiness.report())).await;
            tokio::task::yield_now().await;
        }
        let elapsed = started.elapsed();
        let calls = probe.calls.load(Ordering::SeqCst) as u128;
        let most = elapsed.as_millis() / interval.as_millis() + 1;
        assert!(
            (2..=most).contains(&calls),
            "{calls} checks in {elapsed:?} at one per {interval:?}"
        );
    }

    #[tokio::test]
    async fn no_result_older_than_the_interval_is_served() {
        let probe = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            delay: Duration::ZERO,
        });
        let interval = Duration::from_millis(50);
        let readiness = Readiness::new(vec![probe.clone()], Duration::from_secs(1), interval);
        readiness.report().await;
        readiness.report().await;
        assert_eq!(probe.calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(interval + Duration::from_millis(10)).await;
        readiness.report().await;
        assert_eq!(probe.calls.load(Ordering::SeqCst), 2, "checked again");
    }
}

//! The outbox relay: moves events from the transactional outbox to the event
//! bus, in order, at least once.
//!
//! Rows are claimed with a lease (several relays can run; a dead relay's rows
//! come back when its lease ends), published one by one in insertion order,
//! and marked published. If publishing fails, the rest of the claim is
//! released at once and the relay backs off: nothing is lost while the bus is
//! down, and everything flows once it is back. Old published rows are pruned.

use chrono::Utc;
use ports::{EventPublisher, Outbox, OutboxError, PublishEventError};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Rows per claim.
    pub batch: u32,
    /// How long a claim is held before other relays may take the rows.
    pub lease: Duration,
    /// Longest sleep when idle (a LISTEN notification wakes it sooner).
    pub idle_wait: Duration,
    /// Published rows older than this are deleted.
    pub retain_published: Duration,
    pub prune_every: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch: 100,
            lease: Duration::from_secs(30),
            idle_wait: Duration::from_secs(1),
            retain_published: Duration::from_secs(7 * 24 * 3600),
            prune_every: Duration::from_secs(600),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayPass {
    pub published: usize,
    pub claimed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox: {0}")]
    Outbox(#[from] OutboxError),
    #[error("publish: {0}")]
    Publish(#[from] PublishEventError),
}

#[derive(Clone)]
pub struct OutboxRelay {
    outbox: Arc<dyn Outbox>,
    publisher: Arc<dyn EventPublisher>,
    settings: RelaySettings,
}

impl std::fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRelay")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl OutboxRelay {
    pub fn new(
        outbox: Arc<dyn Outbox>,
        publisher: Arc<dyn EventPublisher>,
        settings: RelaySettings,
    ) -> Self {
        Self {
            outbox,
            publisher,
            settings,
        }
    }

    /// Claims one batch and publishes it. On a publish failure the rows not
    /// yet published are released and the error returned.
    pub async fn pass(&self) -> Result<RelayPass, RelayError> {
        let rows = self
            .outbox
            .claim(self.settings.batch, self.settings.lease)
            .await?;
        let mut published = Vec::with_capacity(rows.len());
        let mut failure = None;
        for row in &rows {
            match self.publisher.publish(&row.envelope).await {
                Ok(_) => {
                    published.push(row.seq);
                    let lag = (Utc::now() - row.created_at).to_std().unwrap_or_default();
                    metrics::histogram!("outbox_relay_lag_seconds").record(lag.as_secs_f64());
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        // Mark what made it even if a later row failed: the bus has it.
        if !published.is_empty() {
            self.outbox.mark_published(&published).await?;
            metrics::counter!("outbox_published_total").increment(published.len() as u64);
        }
        if let Some(e) = failure {
            let rest: Vec<i64> = rows
                .iter()
                .map(|r| r.seq)
                .filter(|s| !published.contains(s))
                .collect();
            if let Err(release) = self.outbox.release(&rest).await {
                tracing::warn!(error = %release, "could not release unpublished outbox rows; they return when their lease ends");
            }
            return Err(e.into());
        }
        Ok(RelayPass {
            published: published.len(),
            claimed: rows.len(),
        })
    }

    /// Runs passes until `shutdown` resolves: back to back while there is a
    /// backlog, waiting for a notification (or `idle_wait`) when empty,
    /// backing off on errors. Prunes old published rows now and then.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let s = &self.settings;
        let mut backoff = s.backoff_min;
        let mut last_prune: Option<std::time::Instant> = None;
        let mut failing = false;
        tracing::info!("outbox relay started");
        loop {
            if last_prune.is_none_or(|t| t.elapsed() >= s.prune_every) {
                last_prune = Some(std::time::Instant::now());
                let before =
                    Utc::now() - chrono::Duration::from_std(s.retain_published).unwrap_or_default();
                match self.outbox.prune_published(before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rows = n, "pruned published outbox rows"),
                    Err(e) => tracing::warn!(error = %e, "pruning the outbox failed"),
                }
                if let Ok(n) = self.outbox.backlog().await {
                    metrics::gauge!("outbox_backlog").set(n as f64);
                }
            }
            let wait = match self.pass().await {
                Ok(pass) => {
                    if failing {
                        failing = false;
                        tracing::info!("outbox relay recovered");
                    }
                    backoff = s.backoff_min;
                    if pass.claimed == s.batch as usize {
                        Duration::ZERO
                    } else {
                        s.idle_wait
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %format!("{e:#}"), "outbox relay failing; backing off");
                        failing = true;
                    }
                    let w = backoff;
                    backoff = (backoff * 2).min(s.backoff_max);
                    w
                }
            };
            if wait.is_zero() {
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = std::future::ready(()) => {}
                }
            } else if failing {
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(wait) => {}
                }
            } else {
                tokio::select! {
                    () = &mut shutdown => break,
                    () = self.outbox.wait_for_rows(wait) => {}
                }
            }
        }
        tracing::info!("outbox relay stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{FirebaseUid, ProfileDefaults, ProfilePatch};
    use ports::UserRepository;
    use ports::testing::{InMemoryStore, RecordingPublisher};

    async fn users(store: &InMemoryStore, n: usize) {
        for i in 0..n {
            let uid = FirebaseUid::parse(&format!("u{i}")).unwrap();
            store
                .upsert_profile(&uid, &ProfilePatch::default(), &ProfileDefaults::default())
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_pass_publishes_in_order_and_marks_published() {
        let store = Arc::new(InMemoryStore::new());
        users(&store, 5).await;
        let bus = Arc::new(RecordingPublisher::new());
        let relay = OutboxRelay::new(store.clone(), bus.clone(), RelaySettings::default());
        assert_eq!(
            relay.pass().await.unwrap(),
            RelayPass {
                published: 5,
                claimed: 5
            }
        );
        let ids: Vec<_> = bus.published().iter().map(|e| e.id).collect();
        let expected: Vec<_> = store.events().iter().map(|e| e.id).collect();
        assert_eq!(ids, expected);
        assert_eq!(store.backlog().await.unwrap(), 0);
        assert_eq!(relay.pass().await.unwrap(), RelayPass::default());
    }

    #[tokio::test]
    async fn rows_written_while_the_bus_is_down_flow_once_it_is_back() {
        let store = Arc::new(InMemoryStore::new());
        users(&store, 3).await;
        let bus = Arc::new(RecordingPublisher::new());
        bus.set_down(true);
        let relay = OutboxRelay::new(store.clone(), bus.clone(), RelaySettings::default());
        assert!(relay.pass().await.is_err());
        assert_eq!(
            store.backlog().await.unwrap(),
            3,
            "nothing lost, nothing marked"
        );
        bus.set_down(false);
        assert_eq!(
            relay.pass().await.unwrap().published,
            3,
            "released rows are claimable at once"
        );
        assert_eq!(bus.published().len(), 3);
    }
}

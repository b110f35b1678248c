//! The outbox relay: moves events from the transactional outbox to the event
//! bus, in order, at least once.
//!
//! Every worker runs a relay, but only the one that leads the outbox
//! (`Outbox::lead`) publishes; the others stand by and take over within a
//! poll of the leader's death. So rows reach the bus in the order they were
//! written: a user's `user.created` is never behind its `user.profile_updated`.
//! The leader claims rows with a lease, publishes them one by one in
//! insertion order, and marks them published. If publishing fails, the rest
//! of the claim is released at once and the relay backs off: nothing is lost
//! while the bus is down, and everything flows once it is back. Rows are
//! published as written, decoded or not, so a type only a newer version
//! knows reaches a consumer that knows it. Old published rows are pruned.
//!
//! Longer than 450 lines: the relay is under 300 lines; its unit tests
//! (leadership, leases, ordering, against the fakes) are beside it.

use chrono::Utc;
use ports::{EventPublisher, LeaderTerm, Outbox, OutboxError, PublishEventError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

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
    /// How often a standby relay asks to lead: the longest a leader's death
    /// delays publishing.
    pub takeover_poll: Duration,
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
            takeover_poll: Duration::from_millis(500),
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
    /// The bus holds a fence from a later term, yet this relay still leads
    /// (its session holds the lock, so no other relay does): the fence is
    /// stale (a database clock that went back, a restored database).
    #[error("the bus holds a fence from term {0}, later than this leader's")]
    StaleFence(LeaderTerm),
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

    /// Claims one batch and publishes it as the leader of `term`. On a
    /// publish failure the rows not yet published are released and the
    /// error returned. Rows count as published only once the bus confirms
    /// them (its replicas hold them); if it cannot, all of them are
    /// released, to be published again (consumers deduplicate).
    ///
    /// A pass stops early, releasing the rest for the next, once its lease
    /// is nearly over (a later leader may claim them then), and stops
    /// without releasing anything once the bus
    /// says a later leader publishes (`PublishEventError::Fenced`): then it
    /// neither publishes nor releases anything more, as the rows are the
    /// successor's.
    pub async fn pass(&self, term: LeaderTerm) -> Result<RelayPass, RelayError> {
        let claimed_at = Instant::now();
        let rows = self
            .outbox
            .claim(self.settings.batch, self.settings.lease)
            .await?;
        // Margin for an append already on its way when the lease ends.
        let publish_until = claimed_at + self.settings.lease.mul_f64(0.8);
        let mut published = Vec::with_capacity(rows.len());
        let mut failure = None;
        let mut ran_out = false;
        for row in &rows {
            if Instant::now() >= publish_until {
                tracing::warn!(
                    left = rows.len() - published.len(),
                    "the relay's lease ran out mid-batch; the rest goes in the next pass"
                );
                ran_out = true;
                break;
            }
            match self.publisher.publish_as_leader(&row.event, term).await {
                Ok(_) => published.push(row),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let fenced_by = match failure {
            Some(PublishEventError::Fenced { by }) => Some(by),
            _ => None,
        };
        // Fenced while this relay still leads: the fence is stale, and the
        // rows are this relay's to release and publish again.
        let stale = match fenced_by {
            Some(_) => matches!(self.outbox.lead().await, Ok(Some(_))),
            None => false,
        };
        let fenced = fenced_by.is_some() && !stale;
        let mut durable = true;
        if !published.is_empty()
            && let Err(e) = self.publisher.confirm().await
        {
            // Not known to survive a failover: none of them counts.
            durable = false;
            failure.get_or_insert(e);
        }
        // Mark what made it even if a later row failed: the bus has it.
        if durable && !published.is_empty() {
            let seqs: Vec<i64> = published.iter().map(|r| r.seq).collect();
            self.outbox.mark_published(&seqs).await?;
            metrics::counter!("outbox_published_total").increment(seqs.len() as u64);
            for row in &published {
                let lag = (Utc::now() - row.created_at).to_std().unwrap_or_default();
                metrics::histogram!("outbox_relay_lag_seconds").record(lag.as_secs_f64());
            }
        }
        let marked = if durable { published.len() } else { 0 };
        // Released at once, so the next pass takes them before later rows.
        if (failure.is_some() || ran_out) && !fenced {
            let rest: Vec<i64> = rows[marked..].iter().map(|r| r.seq).collect();
            if let Err(release) = self.outbox.release(&rest).await {
                tracing::warn!(error = %release, "could not release unpublished outbox rows; they return when their lease ends");
            }
        }
        if let (Some(by), true) = (fenced_by, stale) {
            return Err(RelayError::StaleFence(by));
        }
        if let Some(e) = failure {
            return Err(e.into());
        }
        Ok(RelayPass {
            published: published.len(),
            claimed: rows.len(),
        })
    }

    /// Runs passes until `stop` is cancelled: back to back while there is a
    /// backlog, waiting for a notification (or `idle_wait`) when empty,
    /// backing off on errors. Prunes old published rows now and then.
    pub async fn run(&self, stop: CancellationToken) {
        let shutdown = stop.cancelled();
        tokio::pin!(shutdown);
        let s = &self.settings;
        let mut backoff = s.backoff_min;
        let mut last_prune: Option<std::time::Instant> = None;
        let mut failing = false;
        let mut leading = false;
        // A term this relay took past a stale fence while leading.
        let mut raised: Option<LeaderTerm> = None;
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
            let term = match self.outbox.lead().await {
                Ok(Some(term)) => {
                    if !leading {
                        leading = true;
                        tracing::info!(%term, "this relay leads: it publishes the outbox");
                    }
                    // A term raised past a stale fence (below) stays raised.
                    raised.filter(|r| *r > term).unwrap_or(term)
                }
                Ok(None) | Err(_) => {
                    if leading {
                        leading = false;
                        tracing::warn!("this relay no longer leads; standing by");
                    }
                    raised = None;
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(s.takeover_poll) => {}
                    }
                    continue;
                }
            };
            let wait = match self.pass(term).await {
                Err(RelayError::StaleFence(by)) => {
                    // Anyone publishing under that term is a relay that
                    // lost its leadership: fence it out.
                    tracing::warn!(%term, fence = %by, "the bus holds a fence from a later term than this relay's, yet this relay leads; it takes a term past it");
                    raised = Some(LeaderTerm(by.0.saturating_add(1)));
                    Duration::ZERO
                }
                Err(RelayError::Publish(PublishEventError::Fenced { by })) => {
                    tracing::warn!(%term, fence = %by, "a later relay leader publishes now; this one stops and stands by");
                    leading = false;
                    Duration::ZERO
                }
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
        if leading {
            self.outbox.resign().await;
        }
        tracing::info!("outbox relay stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{FirebaseUid, ProfileDefaults, ProfilePatch};
    use ports::UserRepository;
    use ports_testing::{InMemoryStore, RecordingPublisher};

    const TERM: LeaderTerm = LeaderTerm(1);

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
            relay.pass(TERM).await.unwrap(),
            RelayPass {
                published: 5,
                claimed: 5
            }
        );
        let ids: Vec<_> = bus.published().iter().map(|e| e.id).collect();
        let expected: Vec<_> = store.events().iter().map(|e| e.id).collect();
        assert_eq!(ids, expected);
        assert_eq!(store.backlog().await.unwrap(), 0);
        assert_eq!(relay.pass(TERM).await.unwrap(), RelayPass::default());
    }

    #[tokio::test]
    async fn rows_written_while_the_bus_is_down_flow_once_it_is_back() {
        let store = Arc::new(InMemoryStore::new());
        users(&store, 3).await;
        let bus = Arc::new(RecordingPublisher::new());
        bus.set_down(true);
        let relay = OutboxRelay::new(store.clone(), bus.clone(), RelaySettings::default());
        assert!(relay.pass(TERM).await.is_err());
        assert_eq!(
            store.backlog().await.unwrap(),
            3,
            "nothing lost, nothing marked"
        );
        bus.set_down(false);
        assert_eq!(
            relay.pass(TERM).await.unwrap().published,
            3,
            "released rows are claimable at once"
        );
        assert_eq!(bus.published().len(), 3);
    }

    #[tokio::test]
    async fn rows_the_bus_cannot_confirm_are_released_and_published_again() {
        let store = Arc::new(InMemoryStore::new());
        users(&store, 3).await;
        let bus = Arc::new(RecordingPublisher::new());
        bus.set_unconfirmed(true);
        let relay = OutboxRelay::new(store.clone(), bus.clone(), RelaySettings::default());
        assert!(relay.pass(TERM).await.is_err());
        assert_eq!(bus.published().len(), 3, "appended, but not confirmed");
        assert_eq!(store.backlog().await.unwrap(), 3, "so none is marked");
        bus.set_unconfirmed(false);
        assert_eq!(
            relay.pass(TERM).await.unwrap().published,
            3,
            "released at once, published again"
        );
        assert_eq!(store.backlog().await.unwrap(), 0);
        assert_eq!(bus.confirms(), 1);
    }

    #[tokio::test]
    async fn a_relay_fenced_by_a_later_term_stops_and_leaves_its_rows_to_the_successor() {
        let store = Arc::new(InMemoryStore::new());
        users(&store, 3).await;
        let bus = Arc::new(RecordingPublisher::new());
        // A later leader has published on the topic.
        let later = domain::RawEvent::from(&store.events()[0]);
        bus.publish_as_leader(&later, LeaderTerm(2)).await.unwrap();
        // ...and holds the leadership.
        let successor = store.handle();
        assert!(successor.lead().await.unwrap().is_some());
        let relay = OutboxRelay::new(store.clone(), bus.clone(), RelaySettings::default());
        assert!(matches!(
            relay.pass(TERM).await,
            Err(RelayError::Publish(PublishEventError::Fenced {
                by: LeaderTerm(2)
            }))
        ));
        assert_eq!(bus.published().len(), 1, "nothing appended after the fence");
        assert_eq!(store.backlog().await.unwrap(), 3);
        assert!(
            successor
                .claim(10, Duration::from_secs(1))
                .await
                .unwrap()
                .is_empty(),
            "the fenced relay's claims stand: not released under its successor"
        );
    }

    #[tokio::test]
    async fn a_leader_facing_a_stale_fence_takes_a_term_past_it_and_publishes() {
        let store = Arc::new(InMemoryStore::new());
        users(&store, 3).await;
        let bus = Arc::new(RecordingPublisher::new());
        // A fence from a term no leader holds now (a database clock that
        // went back): this relay leads, so it is stale.
        let mut stale = domain::RawEvent::from(&store.events()[0]);
        stale.id = uuid::Uuid::new_v4();
        bus.publish_as_leader(&stale, LeaderTerm(1_000))
            .await
            .unwrap();
        let relay = OutboxRelay::new(
            Arc::new(store.handle()),
            bus.clone(),
            RelaySettings {
                idle_wait: Duration::from_millis(10),
                ..RelaySettings::default()
            },
        );
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move { relay.run(stop).await }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.backlog().await.unwrap() > 0 {
            assert!(std::time::Instant::now() < deadline, "never published");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.cancel();
        task.await.unwrap();
        assert_eq!(bus.published().len(), 4);
    }

    #[tokio::test]
    async fn a_pass_whose_lease_runs_out_releases_the_rest_for_the_next_in_order() {
        let store = Arc::new(InMemoryStore::new());
        users(&store, 10).await;
        let bus = Arc::new(RecordingPublisher::new());
        // 30 ms a publish; the lease is 100 ms, so a pass stops at 80 ms.
        bus.set_delay(Duration::from_millis(30));
        let relay = OutboxRelay::new(
            store.clone(),
            bus.clone(),
            RelaySettings {
                lease: Duration::from_millis(100),
                ..RelaySettings::default()
            },
        );
        let first = relay.pass(TERM).await.unwrap();
        assert!(
            first.published < 10,
            "the lease ran out: {} published",
            first.published
        );
        // The rest is claimable at once (not after its lease), before any
        // later row.
        users_from(&store, 2, "later").await;
        for _ in 0..12 {
            if store.backlog().await.unwrap() == 0 {
                break;
            }
            relay.pass(TERM).await.unwrap();
        }
        assert_eq!(store.backlog().await.unwrap(), 0);
        let ids: Vec<_> = bus.published().iter().map(|e| e.id).collect();
        let written: Vec<_> = store.events().iter().map(|e| e.id).collect();
        assert_eq!(ids, written, "published once each, in the order written");
    }

    #[tokio::test]
    async fn a_row_of_a_type_this_version_does_not_know_is_published_as_written() {
        let store = Arc::new(InMemoryStore::new());
        users(&store, 1).await;
        let future = store.append_raw("user.future", serde_json::json!({"hello": "from v9"}));
        users_from(&store, 1, "later").await;
        let bus = Arc::new(RecordingPublisher::new());
        let relay = OutboxRelay::new(store.clone(), bus.clone(), RelaySettings::default());
        assert_eq!(relay.pass(TERM).await.unwrap().published, 3);
        let published = bus.published();
        let types: Vec<&str> = published.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types, ["user.created", "user.future", "user.created"]);
        assert_eq!(published[1], future, "type, payload and id as written");
        assert_eq!(store.backlog().await.unwrap(), 0);
    }

    async fn users_from(store: &InMemoryStore, n: usize, prefix: &str) {
        for i in 0..n {
            let uid = FirebaseUid::parse(&format!("{prefix}{i}")).unwrap();
            store
                .upsert_profile(&uid, &ProfilePatch::default(), &ProfileDefaults::default())
                .await
                .unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_relays_and_a_slow_bus_keep_each_users_events_in_order_through_a_takeover() {
        use domain::DisplayName;
        const USERS: usize = 12;
        const CHANGES: usize = 4;
        let store = Arc::new(InMemoryStore::new());
        // Each user is created, then changed a few times, interleaved.
        for round in 0..=CHANGES {
            for i in 0..USERS {
                let uid = FirebaseUid::parse(&format!("u{i}")).unwrap();
                let patch = ProfilePatch {
                    display_name: Some(DisplayName::parse(&format!("v{round}")).unwrap()),
                    ..ProfilePatch::default()
                };
                store
                    .upsert_profile(&uid, &patch, &ProfileDefaults::default())
                    .await
                    .unwrap();
            }
        }
        let written: Vec<uuid::Uuid> = store.events().iter().map(|e| e.id).collect();
        let bus = Arc::new(RecordingPublisher::new());
        bus.set_delay(Duration::from_millis(2));
        let settings = RelaySettings {
            batch: 7,
            takeover_poll: Duration::from_millis(20),
            ..RelaySettings::default()
        };
        let start = |handle: InMemoryStore| {
            let relay = OutboxRelay::new(Arc::new(handle), bus.clone(), settings.clone());
            let stop = CancellationToken::new();
            let task = tokio::spawn({
                let stop = stop.clone();
                async move { relay.run(stop).await }
            });
            (stop, task)
        };
        // The first relay leads; a second stands by.
        let (_stop_a, a) = start(store.handle());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while bus.published().is_empty() {
            assert!(std::time::Instant::now() < deadline, "nothing published");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (stop_b, b) = start(store.handle());
        // Kill the leader once a third is out: its task dies mid-batch.
        while bus.published().len() < written.len() / 3 {
            assert!(std::time::Instant::now() < deadline, "too slow");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        a.abort();
        let _ = a.await;
        while store.backlog().await.unwrap() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the standby never took over"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop_b.cancel();
        b.await.unwrap();
        // First appearances (repeats are allowed: at least once) follow the
        // order of writing, which keeps every user's events in order.
        let mut seen = std::collections::HashSet::new();
        let firsts: Vec<uuid::Uuid> = bus
            .published()
            .iter()
            .map(|e| e.id)
            .filter(|id| seen.insert(*id))
            .collect();
        assert_eq!(firsts, written);
    }
}

//! `RedisStreamConsumer`: one consumer of one consumer group, at-least-once.
//!
//! On start it creates its group if needed (`MKSTREAM`, from the beginning of
//! the stream), drains its own pending entries, then reads new ones with a
//! blocking `XREADGROUP`. An entry is acknowledged only after the handler
//! succeeds (or after it is dead-lettered). A janitor claims entries idle
//! longer than `claim_idle` — from dead consumers, and this consumer's own
//! failures — with `XAUTOCLAIM`; past `max_deliveries` an entry goes to the
//! dead-letter stream with its reason. Processed event ids are remembered for
//! `dedupe_ttl`, so a repeated event (a relay that published twice, a
//! redelivery after a crash between handling and acking) is handled once.
//!
//! # Layout
//!
//! - this file: the settings, the consumer, its run loop and the handling
//!   of a batch (decode, dedupe, handle, dead-letter, acknowledge);
//! - `group.rs`: the raw consumer-group commands (create, read, pending,
//!   acknowledge, dead-letter, the dedupe marks, trimming, gauges).

mod group;

use crate::publisher::{cluster_stream_key, stream_key};
use crate::reply::{self, Entry, command, v};
use crate::wire::{self, EVENT_FIELD, Undecodable};
use async_trait::async_trait;
use domain::EventEnvelope;
use fred::clients::Client;
use fred::interfaces::ClientLike as _;
use fred::prelude::Value;
use futures_util::FutureExt as _;
use ports::{ConsumeEventsError, EventConsumer, EventHandler, HandleEventError};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How a consumer behaves. `new` gives production defaults.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub prefix: String,
    pub topic: String,
    pub group: String,
    /// Unique per process (the pod name, plus a random suffix).
    pub consumer: String,
    /// Entries per read.
    pub batch: u64,
    /// How long one blocking read waits; also the longest shutdown waits for it.
    pub block: Duration,
    /// Entries pending longer than this are claimed by the janitor.
    pub claim_idle: Duration,
    /// Deliveries after which an entry is dead-lettered.
    pub max_deliveries: u64,
    /// How long processed event ids are remembered.
    pub dedupe_ttl: Duration,
    /// Past this many entries the stream is trimmed of every entry all its
    /// groups have acknowledged, and never of one a group has not: a group
    /// that lags (its consumers down for hours) keeps its entries, and the
    /// stream grows past this until it catches up (`stream_length`,
    /// `stream_group_lag`: alert well before memory runs short).
    pub max_len: u64,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Keys laid out for a Redis Cluster (set from the client by
    /// [`RedisStreamConsumer::new`]).
    pub clustered: bool,
}

impl ConsumerSettings {
    pub fn new(prefix: &str, topic: &str, group: &str, consumer: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            topic: topic.to_owned(),
            group: group.to_owned(),
            consumer: consumer.to_owned(),
            batch: 32,
            block: Duration::from_secs(2),
            claim_idle: Duration::from_secs(30),
            max_deliveries: 5,
            dedupe_ttl: Duration::from_secs(7 * 24 * 3600),
            max_len: 100_000,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(10),
            clustered: false,
        }
    }

    pub fn stream(&self) -> String {
        if self.clustered {
            cluster_stream_key(&self.prefix, &self.topic)
        } else {
            stream_key(&self.prefix, &self.topic)
        }
    }

    /// `<stream>:dead`: entries that could not be processed, with the reason.
    pub fn dead_letter_stream(&self) -> String {
        format!("{}:dead", self.stream())
    }

    fn seen_key(&self, event_id: &uuid::Uuid) -> String {
        format!("{}:{}:seen:{event_id}", self.stream(), self.group)
    }
}

/// One consumer of a group. It owns a Redis connection of its own (blocking
/// reads hold a connection).
pub struct RedisStreamConsumer {
    client: Client,
    settings: ConsumerSettings,
}

impl std::fmt::Debug for RedisStreamConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreamConsumer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Per-run state.
#[derive(Default)]
struct RunState {
    group_ready: bool,
    draining_own: bool,
    last_janitor: Option<Instant>,
    last_errors: HashMap<String, String>,
    failing_since: Option<Instant>,
    /// A blocking read was abandoned at shutdown: the connection is busy
    /// until it times out, so a polite QUIT would wait behind it.
    abandoned_read: bool,
}

fn is_nogroup(e: &fred::error::Error) -> bool {
    e.details().contains("NOGROUP")
}

impl RedisStreamConsumer {
    /// A consumer with a connection of its own, configured like `base`.
    pub fn new(base: &Client, mut settings: ConsumerSettings) -> Self {
        settings.clustered = fred::interfaces::ClientLike::is_clustered(base);
        Self {
            client: base.clone_new(),
            settings,
        }
    }

    /// The name of this consumer's Redis connection (`CLIENT LIST`).
    pub fn connection_name(&self) -> &str {
        fred::interfaces::ClientLike::id(&self.client)
    }

    /// Handles a batch; acknowledges what succeeded (or was dead-lettered).
    /// `deliveries` is known for redelivered entries; new ones count 1.
    async fn process(
        &self,
        handler: &Arc<dyn EventHandler>,
        entries: Vec<Entry>,
        deliveries: &HashMap<String, u64>,
        state: &mut RunState,
    ) -> Result<usize, fred::error::Error> {
        let s = &self.settings;
        let decoded: Vec<(Entry, Result<EventEnvelope, Undecodable>)> = entries
            .into_iter()
            .map(|e| {
                let event = e
                    .field(EVENT_FIELD)
                    .ok_or_else(|| Undecodable::Invalid("no event field".to_owned()))
                    .and_then(wire::decode);
                (e, event)
            })
            .collect();
        let events: Vec<&EventEnvelope> = decoded
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .collect();
        let mut seen = self.seen(&events).await?.into_iter();
        let mut to_ack = Vec::new();
        let mut processed = Vec::new();
        let mut in_batch = std::collections::HashSet::new();
        for (entry, event) in &decoded {
            let n = deliveries.get(&entry.id).copied().unwrap_or(1);
            let event = match event {
                Err(Undecodable::Invalid(reason)) => {
                    self.dead_letter(entry, reason, n).await?;
                    to_ack.push(entry.id.clone());
                    continue;
                }
                // A newer version wrote it: never acknowledged unseen. It
                // stays pending, for the janitor of a consumer that knows it
                // (a rolling deploy finishing) to claim, and is dead-lettered
                // with the reason once the group's delivery limit is spent.
                Err(Undecodable::Newer(reason)) => {
                    if n > s.max_deliveries {
                        let reason = format!("gave up after {} deliveries: {reason}", n - 1);
                        self.dead_letter(entry, &reason, n).await?;
                        to_ack.push(entry.id.clone());
                    } else {
                        tracing::warn!(group = %s.group, entry = %entry.id, delivery = n, reason = %reason,
                            "entry left pending for a consumer that knows it");
                        state.last_errors.insert(entry.id.clone(), reason.clone());
                    }
                    continue;
                }
                Ok(event) => event,
            };
            let seen_before = seen.next().unwrap_or(false);
            if seen_before || !in_batch.insert(event.id) {
                metrics::counter!("stream_duplicates_skipped_total", "group" => s.group.clone())
                    .increment(1);
                to_ack.push(entry.id.clone());
                continue;
            }
            if !handler.handles(&event.event) {
                to_ack.push(entry.id.clone());
                continue;
            }
            if n > s.max_deliveries {
                let last = state.last_errors.remove(&entry.id);
                let reason = format!(
                    "gave up after {} deliveries; last error: {}",
                    n - 1,
                    last.as_deref()
                        .unwrap_or("unknown (handled by another consumer)")
                );
                self.dead_letter(entry, &reason, n).await?;
                to_ack.push(entry.id.clone());
                continue;
            }
            let started = Instant::now();
            let outcome = AssertUnwindSafe(handler.handle(event)).catch_unwind().await;
            let outcome = outcome.unwrap_or_else(|_| {
                Err(HandleEventError::Retry(anyhow::anyhow!(
                    "the handler panicked"
                )))
            });
            metrics::histogram!("stream_handler_duration_seconds", "group" => s.group.clone())
                .record(started.elapsed().as_secs_f64());
            match outcome {
                Ok(()) => {
                    state.last_errors.remove(&entry.id);
                    processed.push(event.id);
                    to_ack.push(entry.id.clone());
                }
                Err(HandleEventError::Reject(reason)) => {
                    self.dead_letter(entry, &format!("rejected: {reason}"), n)
                        .await?;
                    to_ack.push(entry.id.clone());
                }
                Err(HandleEventError::Retry(e)) => {
                    tracing::warn!(group = %s.group, entry = %entry.id, event_id = %event.id, delivery = n,
                        error = %format!("{e:#}"), "handler failed; the entry stays pending and will be retried");
                    state.last_errors.insert(entry.id.clone(), format!("{e:#}"));
                }
            }
        }
        // Remember before acknowledging: a crash in between only causes a
        // redelivery that is then skipped.
        self.mark_seen(&processed).await?;
        self.ack(&to_ack).await?;
        metrics::counter!("stream_entries_processed_total", "group" => s.group.clone())
            .increment(processed.len() as u64);
        Ok(decoded.len())
    }

    /// Claims entries idle past `claim_idle` (dead consumers' and our own
    /// failures) and processes them.
    async fn janitor(
        &self,
        handler: &Arc<dyn EventHandler>,
        state: &mut RunState,
    ) -> Result<(), fred::error::Error> {
        let s = &self.settings;
        let mut cursor = "0-0".to_owned();
        for _ in 0..16 {
            let args = vec![
                v(s.stream()),
                v(&*s.group),
                v(&*s.consumer),
                Value::Integer(s.claim_idle.as_millis() as i64),
                v(&*cursor),
                v("COUNT"),
                Value::Integer(s.batch as i64),
            ];
            let claim = reply::xautoclaim(command(&self.client, "XAUTOCLAIM", false, args).await?);
            if !claim.deleted.is_empty() {
                tracing::warn!(group = %s.group, ids = ?claim.deleted, "pending entries were trimmed from the stream before being processed");
                self.ack(&claim.deleted).await?;
            }
            if !claim.entries.is_empty() {
                tracing::info!(group = %s.group, claimed = claim.entries.len(), "claimed idle entries");
                let deliveries = self.deliveries(&claim.entries).await?;
                self.process(handler, claim.entries, &deliveries, state)
                    .await?;
            }
            if claim.next == "0-0" {
                break;
            }
            cursor = claim.next;
        }
        self.trim().await?;
        self.report_metrics().await;
        Ok(())
    }

    /// One unit of work: make sure the group exists, run the janitor when due,
    /// then drain own pending entries or read new ones.
    async fn step(
        &self,
        handler: &Arc<dyn EventHandler>,
        state: &mut RunState,
        stop: &CancellationToken,
    ) -> Result<(), fred::error::Error> {
        if !state.group_ready {
            self.ensure_group().await?;
            state.group_ready = true;
        }
        let janitor_due = state
            .last_janitor
            .is_none_or(|t| t.elapsed() >= self.settings.claim_idle / 2);
        if janitor_due {
            state.last_janitor = Some(Instant::now());
            self.janitor(handler, state).await?;
        }
        if state.draining_own {
            let entries = self.read(true).await?;
            if entries.is_empty() {
                state.draining_own = false;
                return Ok(());
            }
            let deliveries = self.deliveries(&entries).await?;
            // Entries we keep failing stay in our list; leave them to the janitor.
            let failing = entries
                .iter()
                .all(|e| state.last_errors.contains_key(&e.id));
            self.process(handler, entries, &deliveries, state).await?;
            if failing {
                state.draining_own = false;
            }
            return Ok(());
        }
        // The blocking read is the one wait that shutdown interrupts: what
        // is in hand is always finished and acked. Entries Redis hands out
        // as the read is abandoned stay pending under this consumer, for the
        // janitor (or this consumer's next start) to pick up.
        let entries = tokio::select! {
            r = self.read(false) => r?,
            () = stop.cancelled() => {
                state.abandoned_read = true;
                return Ok(());
            }
        };
        if !entries.is_empty() {
            self.process(handler, entries, &HashMap::new(), state)
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl EventConsumer for RedisStreamConsumer {
    async fn run(
        &self,
        handler: Arc<dyn EventHandler>,
        stop: CancellationToken,
    ) -> Result<(), ConsumeEventsError> {
        self.client.connect();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.wait_for_connect()).await;
        let s = &self.settings;
        tracing::info!(stream = %s.stream(), group = %s.group, consumer = %s.consumer, "event consumer started");
        let mut state = RunState {
            draining_own: true,
            ..RunState::default()
        };
        let mut backoff = s.backoff_min;
        while !stop.is_cancelled() {
            match self.step(&handler, &mut state, &stop).await {
                Ok(()) => {
                    if let Some(since) = state.failing_since.take() {
                        tracing::info!(group = %s.group, down_for_ms = since.elapsed().as_millis() as u64, "event consumer recovered");
                    }
                    backoff = s.backoff_min;
                }
                Err(e) => {
                    if is_nogroup(&e) {
                        state.group_ready = false;
                    }
                    if state.failing_since.is_none() {
                        state.failing_since = Some(Instant::now());
                        tracing::warn!(group = %s.group, error = %e, "event consumer lost Redis; retrying with backoff");
                    } else {
                        tracing::debug!(group = %s.group, error = %e, "event consumer still failing");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = stop.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(s.backoff_max);
                }
            }
        }
        let quit_within = if state.abandoned_read {
            Duration::from_millis(50)
        } else {
            Duration::from_secs(1)
        };
        let _ = tokio::time::timeout(quit_within, self.client.quit()).await;
        tracing::info!(group = %s.group, consumer = %s.consumer, "event consumer stopped");
        Ok(())
    }

    fn claim_idle(&self) -> Duration {
        self.settings.claim_idle
    }
}

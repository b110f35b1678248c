//! The event bus: publishing domain events and consuming them in groups.

use crate::outbox::LeaderTerm;
use async_trait::async_trait;
use domain::{DomainEvent, EventEnvelope, RawEvent};
use std::{sync::Arc, time::Duration};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Error)]
pub enum PublishEventError {
    /// The bus could not be reached or timed out; the event was not published
    /// (or it is unknown whether it was: publishing is at-least-once).
    #[error("event bus unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// A relay leader of a later term has published to this topic: the
    /// caller no longer leads and MUST stop publishing. Nothing was written.
    #[error("a relay leader of a later term ({by}) publishes now")]
    Fenced { by: LeaderTerm },
    #[error(transparent)]
    Unknown(anyhow::Error),
}

/// Puts events on the bus.
#[async_trait]
pub trait EventPublisher: Send + Sync + 'static {
    /// Appends `event` to the stream for its topic, as it is (its type need
    /// not be one this version knows). Returns the bus's id for it.
    ///
    /// MUST return `Unavailable` when the bus cannot be reached. Publishing is
    /// at-least-once: after `Unavailable` the event may still have been
    /// written, so consumers deduplicate by `event.id`. MUST NOT drop or
    /// trim entries a consumer group has not acknowledged.
    async fn publish(&self, event: &RawEvent) -> Result<String, PublishEventError>;

    /// `publish`, by the outbox relay that leads in `term`, fenced: MUST
    /// refuse with `Fenced` (writing nothing) once an event of a later term
    /// is on the topic's stream, and MUST raise the topic's fence to `term`
    /// in the same atomic step as it appends. So a leader that lost its
    /// leadership without knowing it can never append after its successor
    /// has: two leaders' events never interleave on a stream.
    async fn publish_as_leader(
        &self,
        event: &RawEvent,
        term: LeaderTerm,
    ) -> Result<String, PublishEventError>;

    /// Returns once everything this publisher has appended so far would
    /// survive the loss of the bus's primary (its replicas acknowledged it,
    /// as the adapter's `ReplicaWait` asks). MUST return `Unavailable` when
    /// it cannot say so in time: the caller publishes those events again.
    async fn confirm(&self) -> Result<(), PublishEventError>;
}

/// Why a handler did not process an event.
#[derive(Debug, Error)]
pub enum HandleEventError {
    /// Try again later (a dependency is down). The entry stays pending and is
    /// redelivered; after the group's delivery limit it is dead-lettered.
    #[error("retryable: {0:#}")]
    Retry(anyhow::Error),
    /// This event can never be processed (e.g. its data is invalid); it goes to
    /// the dead-letter stream at once with this reason.
    #[error("rejected: {0}")]
    Reject(String),
}

/// Reacts to events delivered to one consumer group. Implementations MUST be
/// idempotent by `event.id`: delivery is at-least-once. An event whose type
/// this version does not know never reaches a handler: the consumer leaves
/// it pending for a newer consumer, and dead-letters it with that reason
/// after the group's delivery limit.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Whether this handler wants `event` (match on its variant); others
    /// are acknowledged unseen.
    fn handles(&self, event: &DomainEvent) -> bool;

    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandleEventError>;
}

#[derive(Debug, Error)]
pub enum ConsumeEventsError {
    /// The consumer could not start (e.g. the group could not be created and
    /// the bus never became reachable before shutdown).
    #[error("event bus unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// A relay leader of a later term has published to this topic: the
    /// caller no longer leads and MUST stop publishing. Nothing was written.
    #[error("a relay leader of a later term ({by}) publishes now")]
    Fenced { by: LeaderTerm },
    #[error(transparent)]
    Unknown(anyhow::Error),
}

/// Runs one consumer of one consumer group until shutdown.
#[async_trait]
pub trait EventConsumer: Send + Sync + 'static {
    /// Delivers events to `handler` until `stop` is cancelled, then finishes
    /// and acknowledges in-flight entries and returns `Ok(())`.
    ///
    /// MUST acknowledge an entry only after `handler` returned `Ok`, or after
    /// dead-lettering it. Connection loss is not an error: the consumer
    /// reconnects with backoff and carries on.
    async fn run(
        &self,
        handler: Arc<dyn EventHandler>,
        stop: CancellationToken,
    ) -> Result<(), ConsumeEventsError>;

    /// How long an entry may stay unacknowledged with a dead consumer before
    /// another consumer claims it.
    fn claim_idle(&self) -> Duration;
}

//! The transactional outbox, as the relay sees it.
//!
//! Repositories append events in the same transaction as the change they
//! describe; a relay moves them to the event bus. Rows are *claimed* with a
//! lease so several relays can run at once: a claimed row is invisible to other
//! relays until its lease ends, so a relay that dies mid-batch delays its rows
//! by one lease but loses none.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::EventEnvelope;
use std::time::Duration;
use thiserror::Error;

/// One outbox row: its insertion order and the event it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    /// Monotonic insertion order; relays publish in this order.
    pub seq: i64,
    pub topic: String,
    pub envelope: EventEnvelope,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Error)]
pub enum OutboxError {
    #[error("outbox store unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Claims up to `limit` unpublished rows, oldest first, for `lease`.
    ///
    /// MUST NOT return a row another claim holds under an unexpired lease, and
    /// MUST return rows whose lease expired without being published. A row
    /// whose payload no longer decodes as an event MUST NOT block the rows
    /// behind it: implementations log it once and set it aside (marked
    /// published with an error) rather than return an error for the batch.
    async fn claim(&self, limit: u32, lease: Duration) -> Result<Vec<OutboxRecord>, OutboxError>;

    /// Marks rows published (idempotent).
    async fn mark_published(&self, seqs: &[i64]) -> Result<(), OutboxError>;

    /// Ends the lease on rows that could not be published, so any relay may
    /// claim them again at once.
    async fn release(&self, seqs: &[i64]) -> Result<(), OutboxError>;

    /// Deletes rows published before `before`. Returns how many.
    async fn prune_published(&self, before: DateTime<Utc>) -> Result<u64, OutboxError>;

    /// How many rows wait to be published.
    async fn backlog(&self) -> Result<u64, OutboxError>;

    /// Resolves when a row may have been appended since the last call, or after
    /// `timeout`, whichever comes first. A spurious wake-up is allowed; a missed
    /// one only delays publishing to the next timeout.
    async fn wait_for_rows(&self, timeout: Duration);
}

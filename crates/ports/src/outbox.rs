//! The transactional outbox, as the relay sees it.
//!
//! Repositories append events in the same transaction as the change they
//! describe; a relay moves them to the event bus. One relay *leads* at a
//! time, so rows reach the bus in the order they were written; any number
//! may stand by and take over within moments of the leader's death. Rows
//! are *claimed* with a lease as well, so a relay that dies mid-batch loses
//! nothing, and a new leader voids its predecessor's leases at once.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::RawEvent;
use std::time::Duration;
use thiserror::Error;

/// One outbox row: its insertion order and the event it carries, as
/// written (its type may be one only a newer version knows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    /// Monotonic insertion order; relays publish in this order.
    pub seq: i64,
    pub event: RawEvent,
    pub created_at: DateTime<Utc>,
}

/// A relay leader's term: every leadership taken has a larger one than the
/// leaderships before it. The bus fences on it (`publish_as_leader`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaderTerm(pub u64);

impl std::fmt::Display for LeaderTerm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
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
    /// Makes this handle the one relay that publishes (or confirms that it
    /// still is). Returns its term while it leads, `None` while another
    /// handle does.
    ///
    /// MUST let at most one handle lead at a time, across processes; MUST
    /// hand leadership to a waiting handle within moments once the leader's
    /// process dies or its connection is lost (not after a lease); a handle
    /// that lost it MUST get `false` (or an error) from its next call.
    /// Becoming the leader voids the leases of rows an earlier leader
    /// claimed, so they are published next, in order, and takes a term
    /// larger than any earlier leadership's (the same term while it keeps
    /// leading).
    async fn lead(&self) -> Result<Option<LeaderTerm>, OutboxError>;

    /// Gives leadership up (at shutdown), so a standby takes over at once.
    async fn resign(&self);

    /// Claims up to `limit` unpublished rows, oldest first, for `lease`.
    ///
    /// MUST NOT return a row another claim holds under an unexpired lease, and
    /// MUST return rows whose lease expired without being published. Rows
    /// are returned as written, without being decoded: a type this version
    /// does not know is carried like any other.
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

//! `PgOutbox`: the relay's side of the transactional outbox.

use crate::error::{PgError, port_error};
use crate::pool::PgPool;
use crate::schema::outbox;
use crate::users::checkout;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Int8, Jsonb, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use domain::{DomainEvent, EventEnvelope};
use futures_util::StreamExt as _;
use ports::{Outbox, OutboxError, OutboxRecord};
use std::time::Duration;
use tokio::sync::Mutex;
use uuid::Uuid;

port_error!(OutboxError);

/// The Postgres channel the outbox trigger notifies on each insert.
pub const OUTBOX_CHANNEL: &str = "trellis_outbox";

/// Rows deleted per statement when pruning, to keep each transaction short.
const PRUNE_BATCH: i64 = 5_000;

#[derive(Debug, QueryableByName)]
struct ClaimedRow {
    #[diesel(sql_type = Int8)]
    seq: i64,
    #[diesel(sql_type = SqlUuid)]
    event_id: Uuid,
    #[diesel(sql_type = Text)]
    topic: String,
    #[diesel(sql_type = Text)]
    event_type: String,
    #[diesel(sql_type = Jsonb)]
    payload: serde_json::Value,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
}

const CLAIM_SQL: &str = "
UPDATE outbox
   SET claimed_until = now() + make_interval(secs => $2), attempts = attempts + 1
 WHERE seq IN (SELECT seq FROM outbox
                WHERE published_at IS NULL
                  AND (claimed_until IS NULL OR claimed_until <= now())
                ORDER BY seq
                LIMIT $1
                  FOR UPDATE SKIP LOCKED)
RETURNING seq, event_id, topic, event_type, payload, created_at";

const PRUNE_SQL: &str = "
DELETE FROM outbox
 WHERE seq IN (SELECT seq FROM outbox WHERE published_at < $1 LIMIT $2)";

/// The outbox in Postgres. Keeps one extra connection (outside the pool)
/// that LISTENs for inserts, so a relay wakes within milliseconds.
pub struct PgOutbox {
    pool: PgPool,
    url: String,
    listener: Mutex<Option<AsyncPgConnection>>,
}

impl std::fmt::Debug for PgOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOutbox").finish_non_exhaustive()
    }
}

impl PgOutbox {
    /// `url` is used for the LISTEN connection only.
    pub fn new(pool: PgPool, url: impl Into<String>) -> Self {
        Self {
            pool,
            url: url.into(),
            listener: Mutex::new(None),
        }
    }

    async fn listen(&self) -> anyhow::Result<AsyncPgConnection> {
        let mut conn = AsyncPgConnection::establish(&self.url).await?;
        diesel::sql_query(format!("LISTEN {OUTBOX_CHANNEL}"))
            .execute(&mut conn)
            .await?;
        Ok(conn)
    }
}

#[async_trait]
impl Outbox for PgOutbox {
    async fn claim(&self, limit: u32, lease: Duration) -> Result<Vec<OutboxRecord>, OutboxError> {
        let mut conn = checkout(&self.pool).await?;
        let mut rows: Vec<ClaimedRow> = diesel::sql_query(CLAIM_SQL)
            .bind::<BigInt, _>(i64::from(limit))
            .bind::<Double, _>(lease.as_secs_f64())
            .load(&mut conn)
            .await
            .map_err(PgError::from)?;
        rows.sort_by_key(|r| r.seq);
        let mut records = Vec::with_capacity(rows.len());
        let mut undecodable = Vec::new();
        for row in rows {
            match DomainEvent::from_parts(&row.event_type, row.payload) {
                Ok(event) => records.push(OutboxRecord {
                    seq: row.seq,
                    topic: row.topic,
                    envelope: EventEnvelope {
                        id: row.event_id,
                        occurred_at: row.created_at,
                        event,
                    },
                    created_at: row.created_at,
                }),
                Err(e) => {
                    tracing::error!(seq = row.seq, event_id = %row.event_id, error = %e,
                        "outbox row does not decode; setting it aside");
                    undecodable.push((row.seq, e.to_string()));
                }
            }
        }
        for (seq, error) in undecodable {
            diesel::update(outbox::table.filter(outbox::seq.eq(seq)))
                .set((
                    outbox::published_at.eq(diesel::dsl::now),
                    outbox::claimed_until.eq(None::<DateTime<Utc>>),
                    outbox::last_error.eq(error),
                ))
                .execute(&mut conn)
                .await
                .map_err(PgError::from)?;
        }
        Ok(records)
    }

    async fn mark_published(&self, seqs: &[i64]) -> Result<(), OutboxError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut conn = checkout(&self.pool).await?;
        diesel::update(
            outbox::table
                .filter(outbox::seq.eq_any(seqs))
                .filter(outbox::published_at.is_null()),
        )
        .set((
            outbox::published_at.eq(diesel::dsl::now),
            outbox::claimed_until.eq(None::<DateTime<Utc>>),
        ))
        .execute(&mut conn)
        .await
        .map_err(PgError::from)?;
        Ok(())
    }

    async fn release(&self, seqs: &[i64]) -> Result<(), OutboxError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut conn = checkout(&self.pool).await?;
        diesel::update(
            outbox::table
                .filter(outbox::seq.eq_any(seqs))
                .filter(outbox::published_at.is_null()),
        )
        .set(outbox::claimed_until.eq(None::<DateTime<Utc>>))
        .execute(&mut conn)
        .await
        .map_err(PgError::from)?;
        Ok(())
    }

    async fn prune_published(&self, before: DateTime<Utc>) -> Result<u64, OutboxError> {
        let mut conn = checkout(&self.pool).await?;
        let mut total = 0_u64;
        loop {
            let n = diesel::sql_query(PRUNE_SQL)
                .bind::<Timestamptz, _>(before)
                .bind::<BigInt, _>(PRUNE_BATCH)
                .execute(&mut conn)
                .await
                .map_err(PgError::from)?;
            total += n as u64;
            if (n as i64) < PRUNE_BATCH {
                return Ok(total);
            }
        }
    }

    async fn backlog(&self) -> Result<u64, OutboxError> {
        let mut conn = checkout(&self.pool).await?;
        let n: i64 = outbox::table
            .filter(outbox::published_at.is_null())
            .count()
            .get_result(&mut conn)
            .await
            .map_err(PgError::from)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn wait_for_rows(&self, timeout: Duration) {
        let mut guard = self.listener.lock().await;
        if guard.is_none() {
            match self.listen().await {
                Ok(conn) => *guard = Some(conn),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot LISTEN for outbox inserts; polling instead");
                    drop(guard);
                    tokio::time::sleep(timeout).await;
                    return;
                }
            }
        }
        let broken = match guard.as_mut() {
            None => return,
            Some(conn) => {
                let mut stream = std::pin::pin!(conn.notifications_stream());
                tokio::select! {
                    n = stream.next() => matches!(n, Some(Err(_)) | None),
                    () = tokio::time::sleep(timeout) => false,
                }
            }
        };
        if broken {
            tracing::warn!("outbox LISTEN connection lost; reconnecting on the next wait");
            *guard = None;
        }
    }
}

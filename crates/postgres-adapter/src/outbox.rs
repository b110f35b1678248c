//! `PgOutbox`: the relay's side of the transactional outbox.

use crate::error::{PgError, port_error};
use crate::pool::PgPool;
use crate::schema::outbox;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Int8, Jsonb, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::RawEvent;
use futures_util::StreamExt as _;
use ports::{LeaderTerm, Outbox, OutboxError, OutboxRecord};
use std::time::Duration;
use tokio::sync::Mutex;
use uuid::Uuid;

port_error!(OutboxError);

#[derive(Debug, Insertable)]
#[diesel(table_name = outbox)]
struct NewOutboxRow<'a> {
    event_id: Uuid,
    topic: &'a str,
    event_type: &'a str,
    payload: serde_json::Value,
}

/// Appends `event` to the outbox on `conn` (call it inside the transaction
/// that makes the change the event describes).
pub(crate) async fn append_event(
    conn: &mut AsyncPgConnection,
    event: &domain::DomainEvent,
) -> QueryResult<()> {
    diesel::insert_into(outbox::table)
        .values(NewOutboxRow {
            event_id: Uuid::now_v7(),
            topic: event.topic(),
            event_type: event.event_type(),
            payload: event.payload(),
        })
        .execute(conn)
        .await
        .map(drop)
}

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

/// Takes the relays' leadership for this schema (one lock per schema, so
/// test schemas in one database do not share it).
const TRY_LEAD_SQL: &str = "
SELECT pg_try_advisory_lock(hashtextextended('trellis:outbox-relay:' || current_schema(), 0)) AS won";

/// A new leader voids the leases its predecessor held.
const VOID_LEASES_SQL: &str = "UPDATE outbox SET claimed_until = NULL WHERE published_at IS NULL AND claimed_until IS NOT NULL";

/// A new leader's term: the database's clock in microseconds, so a later
/// leadership has a larger term (across restarts and restores, where a
/// sequence or a transaction id could go back). A clock that steps back
/// further than the time between two leaderships gives a term below the
/// bus's fence; the relay then finds it still leads and takes a term
/// past the fence (`usecases::relay`).
const TERM_SQL: &str = "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS term";

#[derive(Debug, QueryableByName)]
struct Term {
    #[diesel(sql_type = BigInt)]
    term: i64,
}

#[derive(Debug, QueryableByName)]
struct Won {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    won: bool,
}

/// The session that holds (or waits for) the relays' advisory lock.
struct Seat {
    conn: AsyncPgConnection,
    /// The term of its leadership while it leads.
    term: Option<LeaderTerm>,
}

/// The outbox in Postgres. Keeps two connections outside the pool: one that
/// LISTENs for inserts, so a relay wakes within milliseconds, and one whose
/// session holds the relays' advisory lock while this relay leads (so a
/// leader that dies, and its session with it, hands over at once).
pub struct PgOutbox {
    pool: PgPool,
    url: String,
    listener: Mutex<Option<AsyncPgConnection>>,
    /// Whether the last LISTEN attempt failed (said once per outage).
    listen_failing: std::sync::atomic::AtomicBool,
    leader: Mutex<Option<Seat>>,
}

impl std::fmt::Debug for PgOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOutbox").finish_non_exhaustive()
    }
}

impl PgOutbox {
    /// `url` is used for the LISTEN and leadership connections only.
    pub fn new(pool: PgPool, url: impl Into<String>) -> Self {
        Self {
            pool,
            url: url.into(),
            listener: Mutex::new(None),
            listen_failing: std::sync::atomic::AtomicBool::new(false),
            leader: Mutex::new(None),
        }
    }

    async fn listen(&self) -> anyhow::Result<AsyncPgConnection> {
        let mut conn = crate::connect::connect(&self.url).await?;
        diesel::sql_query(format!("LISTEN {OUTBOX_CHANNEL}"))
            .execute(&mut conn)
            .await?;
        Ok(conn)
    }
}

/// Ends the claim on the still unpublished rows of `seqs`, marking them
/// published (by the database's clock) or leaving them for the next claim.
const END_CLAIM_SQL: &str = "UPDATE outbox
    SET claimed_until = NULL, published_at = CASE WHEN $2 THEN now() END
    WHERE seq = ANY($1) AND published_at IS NULL";

/// Leases the next `limit` unpublished rows for `lease`.
async fn claim_rows(
    conn: &mut AsyncPgConnection,
    limit: u32,
    lease: Duration,
) -> diesel::QueryResult<Vec<ClaimedRow>> {
    diesel::sql_query(CLAIM_SQL)
        .bind::<BigInt, _>(i64::from(limit))
        .bind::<Double, _>(lease.as_secs_f64())
        .load(conn)
        .await
}

impl PgOutbox {
    async fn end_claim(&self, seqs: &[i64], published: bool) -> Result<(), OutboxError> {
        if seqs.is_empty() {
            return Ok(());
        }
        run!(self.pool, conn => diesel::sql_query(END_CLAIM_SQL)
            .bind::<diesel::sql_types::Array<BigInt>, _>(seqs)
            .bind::<diesel::sql_types::Bool, _>(published)
            .execute(conn)
            .await
            .map_err(PgError::from))?;
        Ok(())
    }
}

#[async_trait]
impl Outbox for PgOutbox {
    async fn lead(&self) -> Result<Option<LeaderTerm>, OutboxError> {
        let mut guard = self.leader.lock().await;
        if let Some(seat) = guard.as_mut() {
            // A live session keeps its advisory lock: a round trip on it
            // is proof of leadership (or of still waiting for it).
            if diesel::sql_query("SELECT 1")
                .execute(&mut seat.conn)
                .await
                .is_err()
            {
                if let Some(term) = seat.term {
                    tracing::warn!(%term, "the outbox relay lost its leadership connection");
                }
                *guard = None;
            } else if seat.term.is_some() {
                return Ok(seat.term);
            }
        }
        if guard.is_none() {
            let conn = crate::connect::connect(&self.url).await.map_err(|e| {
                OutboxError::Unavailable(
                    anyhow::Error::new(e).context("connecting to lead the relays"),
                )
            })?;
            *guard = Some(Seat { conn, term: None });
        }
        let Some(seat) = guard.as_mut() else {
            return Ok(None);
        };
        let won: Won = diesel::sql_query(TRY_LEAD_SQL)
            .get_result(&mut seat.conn)
            .await
            .map_err(PgError::from)?;
        if won.won {
            // The previous leader is gone: its leases are void, so its rows
            // go out next, in order.
            diesel::sql_query(VOID_LEASES_SQL)
                .execute(&mut seat.conn)
                .await
                .map_err(PgError::from)?;
            let term: Term = diesel::sql_query(TERM_SQL)
                .get_result(&mut seat.conn)
                .await
                .map_err(PgError::from)?;
            seat.term = Some(LeaderTerm(u64::try_from(term.term).unwrap_or(0)));
        }
        Ok(seat.term)
    }

    async fn resign(&self) {
        // Closing the session releases its advisory lock.
        *self.leader.lock().await = None;
    }

    async fn claim(&self, limit: u32, lease: Duration) -> Result<Vec<OutboxRecord>, OutboxError> {
        // Only the leader claims, one pass at a time, so every lease on
        // the table is from an earlier pass of this relay. A claim whose
        // answer was lost may still have leased its rows: repeated as it
        // is, it would skip them (until the lease ran out) and send later
        // rows first. So it runs once, and after a lost connection the
        // retry first voids those leases and claims in order again.
        let mut rows: Vec<ClaimedRow> = match run!(once self.pool, conn => claim_rows(conn, limit, lease)
            .await
            .map_err(PgError::from))
        {
            Err(e) if e.lost_connection() => {
                crate::session::note_retry(&e);
                run!(once self.pool, conn => {
                    diesel::sql_query(VOID_LEASES_SQL).execute(conn).await?;
                    claim_rows(conn, limit, lease).await
                }
                .map_err(PgError::from))?
            }
            done => done?,
        };
        rows.sort_by_key(|r| r.seq);
        Ok(rows
            .into_iter()
            .map(|row| OutboxRecord {
                seq: row.seq,
                created_at: row.created_at,
                event: RawEvent {
                    id: row.event_id,
                    occurred_at: row.created_at,
                    topic: row.topic,
                    event_type: row.event_type,
                    payload: row.payload,
                },
            })
            .collect())
    }

    async fn mark_published(&self, seqs: &[i64]) -> Result<(), OutboxError> {
        self.end_claim(seqs, true).await
    }

    async fn release(&self, seqs: &[i64]) -> Result<(), OutboxError> {
        self.end_claim(seqs, false).await
    }

    async fn prune_published(&self, before: DateTime<Utc>) -> Result<u64, OutboxError> {
        let mut total = 0_u64;
        loop {
            let n = run!(self.pool, conn => diesel::sql_query(PRUNE_SQL)
                .bind::<Timestamptz, _>(before)
                .bind::<BigInt, _>(PRUNE_BATCH)
                .execute(conn)
                .await
                .map_err(PgError::from))?;
            total += n as u64;
            if (n as i64) < PRUNE_BATCH {
                return Ok(total);
            }
        }
    }

    async fn backlog(&self) -> Result<u64, OutboxError> {
        let n: i64 = run!(self.pool, conn => outbox::table
            .filter(outbox::published_at.is_null())
            .count()
            .get_result(conn)
            .await
            .map_err(PgError::from))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn wait_for_rows(&self, timeout: Duration) {
        let mut guard = self.listener.lock().await;
        if guard.is_none() {
            match self.listen().await {
                Ok(conn) => {
                    if self
                        .listen_failing
                        .swap(false, std::sync::atomic::Ordering::Relaxed)
                    {
                        tracing::info!("LISTENing for outbox inserts again");
                    }
                    *guard = Some(conn);
                }
                Err(e) => {
                    if !self
                        .listen_failing
                        .swap(true, std::sync::atomic::Ordering::Relaxed)
                    {
                        tracing::warn!(error = %e, "cannot LISTEN for outbox inserts; polling instead until it can");
                    }
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

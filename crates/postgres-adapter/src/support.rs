//! `PgSupport`: what the ops console reads from Postgres (`ports::SupportAdmin`):
//! a user by uid or address with their devices (as fingerprints) and their
//! welcome mail, and the outbox's backlog and failing rows.

use crate::error::{PgError, port_error};
use crate::pool::PgPool;
use async_trait::async_trait;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bytea, Int4, Nullable, Text, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use ports::{AdminError, OutboxFailure, OutboxOverview, SupportAdmin, SupportDevice, SupportUser};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Users a search shows at most.
const FOUND_MAX: i64 = 10;
/// Failing outbox rows shown at most.
const FAILING_MAX: i64 = 50;

/// Support's reads, on the app's pool.
#[derive(Clone)]
pub struct PgSupport {
    pool: PgPool,
}

impl std::fmt::Debug for PgSupport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSupport").finish_non_exhaustive()
    }
}

impl PgSupport {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

port_error!(AdminError);

fn admin_error(e: PgError) -> AdminError {
    e.into()
}

#[derive(Debug, QueryableByName)]
struct UserRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    firebase_uid: String,
    #[diesel(sql_type = Nullable<Text>)]
    email: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    verified_email: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    display_name: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    photo_url: Option<String>,
    #[diesel(sql_type = BigInt)]
    created_ms: i64,
    #[diesel(sql_type = BigInt)]
    updated_ms: i64,
}

#[derive(Debug, QueryableByName)]
struct DeviceRow {
    #[diesel(sql_type = Text)]
    token: String,
    #[diesel(sql_type = Text)]
    platform: String,
    #[diesel(sql_type = BigInt)]
    created_ms: i64,
    #[diesel(sql_type = BigInt)]
    seen_ms: i64,
}

#[derive(Debug, QueryableByName)]
struct WelcomeRow {
    #[diesel(sql_type = BigInt)]
    claimed_ms: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    sent_ms: Option<i64>,
}

#[derive(Debug, QueryableByName)]
struct BacklogRow {
    #[diesel(sql_type = BigInt)]
    backlog: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    oldest_ms: Option<i64>,
}

#[derive(Debug, QueryableByName)]
struct FailingRow {
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Text)]
    event_type: String,
    #[diesel(sql_type = Int4)]
    attempts: i32,
    #[diesel(sql_type = Text)]
    last_error: String,
    #[diesel(sql_type = BigInt)]
    created_ms: i64,
}

const MS: &str = "(EXTRACT(EPOCH FROM {}) * 1000)::int8";

fn ms(column: &str) -> String {
    MS.replace("{}", column)
}

#[async_trait]
impl SupportAdmin for PgSupport {
    async fn find_users(&self, query: &str) -> Result<Vec<SupportUser>, AdminError> {
        let query = query.trim();
        if query.is_empty() || query.len() > 320 {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id, firebase_uid, email, verified_email, display_name, photo_url,
                    {} AS created_ms, {} AS updated_ms
               FROM users
              WHERE firebase_uid = $1 OR lower(email) = lower($1) OR lower(verified_email) = lower($1)
              ORDER BY created_at LIMIT {FOUND_MAX}",
            ms("created_at"),
            ms("updated_at"),
        );
        let users: Vec<UserRow> = run!(self.pool, conn => diesel::sql_query(sql.as_str())
            .bind::<Text, _>(query)
            .load(conn)
            .await
            .map_err(PgError::from))
        .map_err(admin_error)?;
        let mut out = Vec::new();
        for u in users {
            let devices: Vec<DeviceRow> = run!(self.pool, conn => diesel::sql_query(format!(
                "SELECT token, platform, {} AS created_ms, {} AS seen_ms
                   FROM push_tokens WHERE user_id = $1 ORDER BY last_seen_at DESC LIMIT 50",
                ms("created_at"),
                ms("last_seen_at"),
            ))
            .bind::<SqlUuid, _>(u.id)
            .load(conn)
            .await
            .map_err(PgError::from))
            .map_err(admin_error)?;
            // The welcome ledger keys rows by a digest of the uid (as
            // `welcome.rs` and the migration compute it).
            let uid_hash =
                Sha256::digest(format!("trellis:welcome:uid:{}", u.firebase_uid).as_bytes())
                    .to_vec();
            let welcome: Vec<WelcomeRow> = run!(self.pool, conn => diesel::sql_query(format!(
                "SELECT {} AS claimed_ms,
                        CASE WHEN sent_at IS NULL THEN NULL ELSE {} END AS sent_ms
                   FROM welcome_mails WHERE uid_hash = $1",
                ms("claimed_at"),
                ms("sent_at"),
            ))
            .bind::<Bytea, _>(uid_hash.clone())
            .load(conn)
            .await
            .map_err(PgError::from))
            .map_err(admin_error)?;
            out.push(SupportUser {
                uid: u.firebase_uid,
                email: u.email,
                verified_email: u.verified_email,
                display_name: u.display_name,
                photo_url: u.photo_url,
                created_at_ms: u.created_ms,
                updated_at_ms: u.updated_ms,
                devices: devices
                    .into_iter()
                    .map(|d| SupportDevice {
                        // Only the fingerprint leaves this function.
                        fingerprint: domain::PushToken::parse(&d.token)
                            .map(|t| t.fingerprint())
                            .unwrap_or_else(|_| "unreadable".into()),
                        platform: d.platform,
                        created_at_ms: d.created_ms,
                        last_seen_at_ms: d.seen_ms,
                    })
                    .collect(),
                welcome_claimed_at_ms: <[WelcomeRow]>::first(&welcome).map(|w| w.claimed_ms),
                welcome_sent_at_ms: <[WelcomeRow]>::first(&welcome).and_then(|w| w.sent_ms),
            });
        }
        Ok(out)
    }

    async fn outbox(&self) -> Result<OutboxOverview, AdminError> {
        let (backlog, failing): (Vec<BacklogRow>, Vec<FailingRow>) = run!(self.pool, conn => {
            let backlog = diesel::sql_query(format!(
                "SELECT count(*)::int8 AS backlog, {} AS oldest_ms
                   FROM outbox WHERE published_at IS NULL",
                ms("now() - min(created_at)"),
            ))
            .load(conn)
            .await
            .map_err(PgError::from)?;
            let failing = diesel::sql_query(format!(
                "SELECT seq, event_type, attempts, last_error, {} AS created_ms
                   FROM outbox
                  WHERE published_at IS NULL AND last_error IS NOT NULL
                  ORDER BY seq DESC LIMIT {FAILING_MAX}",
                ms("created_at"),
            ))
            .load(conn)
            .await
            .map_err(PgError::from)?;
            Ok((backlog, failing))
        })
        .map_err(admin_error)?;
        let b = <[BacklogRow]>::first(&backlog);
        Ok(OutboxOverview {
            backlog: b.map_or(0, |b| u64::try_from(b.backlog).unwrap_or(0)),
            oldest_age_ms: b.and_then(|b| b.oldest_ms),
            failing: failing
                .into_iter()
                .map(|f| OutboxFailure {
                    seq: f.seq,
                    event_type: f.event_type,
                    attempts: f.attempts,
                    last_error: f.last_error,
                    created_at_ms: f.created_ms,
                })
                .collect(),
        })
    }
}

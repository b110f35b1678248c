//! `PgWelcomeLedger`: the durable record of welcome mails (the
//! `WelcomeLedger` port), holding digests only.
//!
//! A row per uid ever claimed, keyed by `SHA-256("trellis:welcome:uid:" ||
//! uid)` (the migration seeds existing users the same way), with the
//! recipient as an HMAC of the lower-cased address under the server's key.
//! A claim runs in one transaction that first takes an advisory lock on the
//! recipient (so two uids cannot claim one address at once), then the
//! uid's row lock: always in that order, so claims never deadlock.

use crate::error::TxError;
use crate::error::{PgError, port_error};
use crate::pool::PgPool;
use async_trait::async_trait;
use diesel::sql_types::{BigInt, Bool, Bytea, Double, Nullable, Uuid as SqlUuid};
use diesel::{OptionalExtension as _, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::{Email, FirebaseUid};
use hmac::{Hmac, Mac};
use ports::{ClaimWelcomeOutcome, SendHolder, WelcomeLedger, WelcomeLedgerError, WelcomeRecord};
use sha2::{Digest, Sha256};
use std::time::Duration;
use uuid::Uuid;

port_error!(WelcomeLedgerError);

/// The uid digest, as the migration computes it in SQL.
fn uid_hash(uid: &FirebaseUid) -> Vec<u8> {
    Sha256::digest(format!("trellis:welcome:uid:{}", uid.as_str()).as_bytes()).to_vec()
}

#[derive(Debug, QueryableByName)]
struct Held {
    #[diesel(sql_type = SqlUuid)]
    holder_job: Uuid,
    #[diesel(sql_type = BigInt)]
    holder_lease: i64,
    #[diesel(sql_type = Bool)]
    sent: bool,
    #[diesel(sql_type = Double)]
    age_secs: f64,
}

#[derive(Debug, QueryableByName)]
struct Found {
    #[diesel(sql_type = Bool)]
    found: bool,
}

const LOCK_RECIPIENT: &str = "SELECT pg_advisory_xact_lock($1)";
const HELD: &str = "
SELECT holder_job, holder_lease, sent_at IS NOT NULL AS sent,
       EXTRACT(EPOCH FROM now() - claimed_at)::float8 AS age_secs
  FROM welcome_mails WHERE uid_hash = $1 FOR UPDATE";
const RECENT_FOR_RECIPIENT: &str = "
SELECT EXISTS (SELECT 1 FROM welcome_mails
                WHERE recipient_hash = $1
                  AND claimed_at > now() - make_interval(secs => $2)) AS found";
const TAKE_OVER: &str = "
UPDATE welcome_mails
   SET holder_job = $2, holder_lease = $3, recipient_hash = $4, claimed_at = now()
 WHERE uid_hash = $1";
const INSERT: &str = "
INSERT INTO welcome_mails (uid_hash, recipient_hash, holder_job, holder_lease)
VALUES ($1, $2, $3, $4) ON CONFLICT (uid_hash) DO NOTHING";
const MARK_SENT: &str = "
UPDATE welcome_mails SET sent_at = coalesce(sent_at, now())
 WHERE uid_hash = $1 AND holder_job = $2 AND holder_lease = $3";
const RELEASE: &str = "
DELETE FROM welcome_mails
 WHERE uid_hash = $1 AND sent_at IS NULL AND holder_job = $2 AND holder_lease = $3";
const FORGET: &str = "
UPDATE welcome_mails SET recipient_hash = NULL
 WHERE recipient_hash IS NOT NULL AND claimed_at <= now() - make_interval(secs => $1)";

/// Welcome mail claims in Postgres.
#[derive(Clone)]
pub struct PgWelcomeLedger {
    pool: PgPool,
    key: Vec<u8>,
}

impl std::fmt::Debug for PgWelcomeLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgWelcomeLedger").finish_non_exhaustive()
    }
}

impl PgWelcomeLedger {
    /// `key` keys the digests of recipient addresses (a server secret:
    /// without it an address cannot be checked against the ledger).
    /// Changing it only forgets which addresses were mailed recently.
    pub fn new(pool: PgPool, key: &[u8]) -> Self {
        Self {
            pool,
            key: key.to_vec(),
        }
    }

    fn recipient_hash(&self, to: &Email) -> Vec<u8> {
        recipient_hash(&self.key, to)
    }

    /// Runs `sql` (`MARK_SENT` or `RELEASE`) on this uid's claim, if
    /// `holder` still holds it.
    async fn as_holder(
        &self,
        sql: &'static str,
        uid: &FirebaseUid,
        holder: SendHolder,
    ) -> Result<(), WelcomeLedgerError> {
        run!(self.pool, conn => diesel::sql_query(sql)
            .bind::<Bytea, _>(uid_hash(uid))
            .bind::<SqlUuid, _>(holder.job.0)
            .bind::<BigInt, _>(lease_i64(holder.lease))
            .execute(conn)
            .await
            .map_err(PgError::from))?;
        Ok(())
    }
}

/// The keyed digest of a lower-cased address.
fn recipient_hash(key: &[u8], to: &Email) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(b"trellis:welcome:recipient:");
    mac.update(to.as_str().to_lowercase().as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn lease_i64(lease: u64) -> i64 {
    i64::try_from(lease).unwrap_or(i64::MAX)
}

async fn claim_once(
    conn: &mut AsyncPgConnection,
    uid: &[u8],
    recipient: &[u8],
    holder: SendHolder,
    window: Duration,
    stale_after: Duration,
) -> Result<Option<ClaimWelcomeOutcome>, TxError> {
    let lock = i64::from_be_bytes(recipient[..8].try_into().unwrap_or([0; 8]));
    diesel::sql_query(LOCK_RECIPIENT)
        .bind::<BigInt, _>(lock)
        .execute(conn)
        .await?;
    let held: Option<Held> = diesel::sql_query(HELD)
        .bind::<Bytea, _>(uid)
        .get_result(conn)
        .await
        .optional()?;
    let job = holder.job.0;
    if let Some(h) = held {
        if h.sent {
            return Ok(Some(ClaimWelcomeOutcome::AlreadySent));
        }
        let ours = h.holder_job == job && h.holder_lease <= lease_i64(holder.lease);
        let age = Duration::from_secs_f64(h.age_secs.max(0.0));
        if !ours && age < stale_after {
            return Ok(Some(ClaimWelcomeOutcome::Busy {
                retry_after: stale_after - age,
            }));
        }
        diesel::sql_query(TAKE_OVER)
            .bind::<Bytea, _>(uid)
            .bind::<SqlUuid, _>(job)
            .bind::<BigInt, _>(lease_i64(holder.lease))
            .bind::<Nullable<Bytea>, _>(Some(recipient))
            .execute(conn)
            .await?;
        return Ok(Some(ClaimWelcomeOutcome::Claimed));
    }
    let recent: Found = diesel::sql_query(RECENT_FOR_RECIPIENT)
        .bind::<Bytea, _>(recipient)
        .bind::<Double, _>(secs(window))
        .get_result(conn)
        .await?;
    if recent.found {
        return Ok(Some(ClaimWelcomeOutcome::RecipientMailedRecently));
    }
    let inserted = diesel::sql_query(INSERT)
        .bind::<Bytea, _>(uid)
        .bind::<Nullable<Bytea>, _>(Some(recipient))
        .bind::<SqlUuid, _>(job)
        .bind::<BigInt, _>(lease_i64(holder.lease))
        .execute(conn)
        .await?;
    // 0: another claim for this uid (to another address) got in first;
    // look again, now that its row is there to lock.
    Ok((inserted == 1).then_some(ClaimWelcomeOutcome::Claimed))
}

#[async_trait]
impl WelcomeLedger for PgWelcomeLedger {
    async fn claim(
        &self,
        uid: &FirebaseUid,
        to: &Email,
        holder: SendHolder,
        recipient_window: Duration,
        stale_after: Duration,
    ) -> Result<ClaimWelcomeOutcome, WelcomeLedgerError> {
        let (uid, recipient) = (uid_hash(uid), self.recipient_hash(to));
        for _ in 0..3 {
            let outcome = transaction!(self.pool, conn => {
                claim_once(
                    conn,
                    &uid,
                    &recipient,
                    holder,
                    recipient_window,
                    stale_after,
                )
                .await
            })
            .map_err(PgError::from)?;
            if let Some(outcome) = outcome {
                return Ok(outcome);
            }
        }
        Err(WelcomeLedgerError::Unavailable(anyhow::anyhow!(
            "the claim kept racing with another for the same uid"
        )))
    }

    async fn mark_sent(
        &self,
        uid: &FirebaseUid,
        holder: SendHolder,
    ) -> Result<(), WelcomeLedgerError> {
        self.as_holder(MARK_SENT, uid, holder).await
    }

    async fn release(
        &self,
        uid: &FirebaseUid,
        holder: SendHolder,
    ) -> Result<(), WelcomeLedgerError> {
        self.as_holder(RELEASE, uid, holder).await
    }

    async fn forget_recipients(&self, window: Duration) -> Result<u64, WelcomeLedgerError> {
        let n = run!(self.pool, conn => diesel::sql_query(FORGET)
            .bind::<Double, _>(secs(window))
            .execute(conn)
            .await
            .map_err(PgError::from))?;
        Ok(n as u64)
    }

    async fn record(&self, uid: &FirebaseUid) -> Result<Option<WelcomeRecord>, WelcomeLedgerError> {
        use crate::schema::welcome_mails::dsl;
        use diesel::{ExpressionMethods as _, QueryDsl as _};
        let row: Option<(
            chrono::DateTime<chrono::Utc>,
            Option<chrono::DateTime<chrono::Utc>>,
        )> = run!(self.pool, conn => dsl::welcome_mails
            .filter(dsl::uid_hash.eq(uid_hash(uid)))
            .select((dsl::claimed_at, dsl::sent_at))
            .first(conn)
            .await
            .optional()
            .map_err(PgError::from))?;
        Ok(row.map(|(claimed_at, sent_at)| WelcomeRecord {
            claimed_at,
            sent_at,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_digested_case_blind_and_only_with_the_key() {
        let at = |s: &str| Email::parse(s).unwrap();
        let a = recipient_hash(b"key-one", &at("Ada@Example.com"));
        assert_eq!(a, recipient_hash(b"key-one", &at("ada@example.com")));
        assert_ne!(a, recipient_hash(b"key-two", &at("ada@example.com")));
        assert_ne!(a, recipient_hash(b"key-one", &at("bob@example.com")));
        assert_ne!(a, Sha256::digest(b"ada@example.com").to_vec());
    }
}

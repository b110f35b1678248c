//! `PgUserRepository`: users by Firebase uid, with their outbox events.

use crate::error::{PgError, TxError, port_error};
use crate::outbox::append_event;
use crate::pool::{PgPool, PgSettings};
use crate::rows::{UserRow, create_user_or_note_verified};
use crate::schema::{account_deletions, users};
use crate::shared::SharedReads;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::{
    DisplayName, DomainEvent, Email, FirebaseUid, PhotoUrl, ProfileDefaults, ProfilePatch, User,
};
use ports::{
    DeleteUserError, FindUserError, StoredEvent, UpsertOutcome, UpsertProfileError,
    UpsertedProfile, UserRepository,
};
use std::sync::Arc;

port_error!(FindUserError, UpsertProfileError, DeleteUserError);

/// How often an upsert starts over when the row it locked vanished (a
/// concurrent delete) before giving up with `Unavailable`.
const UPSERT_ATTEMPTS: usize = 3;

/// Users in Postgres.
#[derive(Clone)]
pub struct PgUserRepository {
    pool: PgPool,
    reads: Option<Arc<SharedReads>>,
}

impl std::fmt::Debug for PgUserRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgUserRepository").finish_non_exhaustive()
    }
}

impl PgUserRepository {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, reads: None }
    }

    /// Serves lookups from `connections` shared, pipelined connections
    /// instead of the pool (see the crate docs). Create one repository per
    /// runtime thread: a connection is driven by the runtime that opened it.
    /// Not through a transaction pooler, where a statement outside a
    /// transaction is not safe (see `session.rs`): reads take the pool.
    pub fn with_pipelined_reads(mut self, settings: &PgSettings, connections: usize) -> Self {
        if settings.through_pooler {
            return self;
        }
        self.reads = Some(Arc::new(SharedReads::new(settings, connections)));
        self
    }
}

fn by_uid(
    uid: &FirebaseUid,
) -> users::BoxedQuery<
    '_,
    diesel::pg::Pg,
    diesel::dsl::SqlTypeOf<diesel::dsl::AsSelect<UserRow, diesel::pg::Pg>>,
> {
    users::table
        .filter(users::firebase_uid.eq(uid.as_str()))
        .select(UserRow::as_select())
        .into_boxed()
}

/// One attempt at an upsert, inside a transaction. `Ok(None)`: the user
/// existed when we tried to insert but was gone when we tried to lock it.
async fn upsert_once(
    conn: &mut AsyncPgConnection,
    uid: &FirebaseUid,
    patch: &ProfilePatch,
    defaults: &ProfileDefaults,
) -> Result<Option<UpsertedProfile>, TxError> {
    let initial = patch.or_defaults(defaults);
    if let Some(user) = create_user_or_note_verified(conn, uid, &initial, defaults).await? {
        return Ok(Some(UpsertedProfile {
            user,
            outcome: UpsertOutcome::Created,
        }));
    }
    let Some(row) = users::table
        .filter(users::firebase_uid.eq(uid.as_str()))
        .select(UserRow::as_select())
        .for_update()
        .get_result(conn)
        .await
        .optional()?
    else {
        if crate::rows::revoked(conn, uid, defaults.issued_at).await? {
            return Err(TxError::AccountDeleted);
        }
        return Ok(None);
    };
    let current = row.into_domain().map_err(TxError::Data)?;
    if !current.would_change(patch) {
        return Ok(Some(UpsertedProfile {
            user: current,
            outcome: UpsertOutcome::Unchanged,
        }));
    }
    let next = current.patched(patch);
    let row = diesel::update(users::table.filter(users::id.eq(current.id.as_uuid())))
        .set((
            users::email.eq(next.email.as_ref().map(Email::as_str)),
            users::display_name.eq(next.display_name.as_ref().map(DisplayName::as_str)),
            users::photo_url.eq(next.photo_url.as_ref().map(PhotoUrl::as_str)),
            users::updated_at.eq(diesel::dsl::now),
        ))
        .returning(UserRow::as_returning())
        .get_result(conn)
        .await?;
    let user = row.into_domain().map_err(TxError::Data)?;
    append_event(conn, &DomainEvent::ProfileUpdated((&user).into())).await?;
    Ok(Some(UpsertedProfile {
        user,
        outcome: UpsertOutcome::Updated,
    }))
}

#[async_trait]
impl UserRepository for PgUserRepository {
    async fn find_by_uid(&self, uid: &FirebaseUid) -> Result<Option<User>, FindUserError> {
        let row = match &self.reads {
            Some(reads) => {
                shared_read!(reads, conn => by_uid(uid).get_result(conn).await.optional())?
            }
            None => run!(self.pool, conn => by_uid(uid)
                .get_result(conn)
                .await
                .optional()
                .map_err(PgError::from))?,
        };
        row.map(UserRow::into_domain)
            .transpose()
            .map_err(FindUserError::Unknown)
    }

    async fn upsert_profile(
        &self,
        uid: &FirebaseUid,
        patch: &ProfilePatch,
        defaults: &ProfileDefaults,
    ) -> Result<UpsertedProfile, UpsertProfileError> {
        for _ in 0..UPSERT_ATTEMPTS {
            let done = match transaction!(self.pool, conn => {
                upsert_once(conn, uid, patch, defaults).await
            }) {
                Err(TxError::AccountDeleted) => return Err(UpsertProfileError::AccountDeleted),
                done => done.map_err(PgError::from)?,
            };
            if let Some(done) = done {
                return Ok(done);
            }
        }
        Err(UpsertProfileError::Unavailable(anyhow::anyhow!(
            "user {uid} was deleted and recreated under {UPSERT_ATTEMPTS} upserts in a row"
        )))
    }

    async fn delete_by_uid(&self, uid: &FirebaseUid) -> Result<User, DeleteUserError> {
        let deleted = transaction!(self.pool, conn => {
            let Some(row) =
                diesel::delete(users::table.filter(users::firebase_uid.eq(uid.as_str())))
                    .returning(UserRow::as_returning())
                    .get_result(conn)
                    .await
                    .optional()?
            else {
                return Ok(None);
            };
            let user = row.into_domain().map_err(TxError::Data)?;
            append_event(conn, &DomainEvent::UserDeleted((&user).into())).await?;
            // The tombstone: tokens issued until now prove nothing more.
            diesel::insert_into(account_deletions::table)
                .values((
                    account_deletions::firebase_uid.eq(uid.as_str()),
                    account_deletions::deleted_at.eq(diesel::dsl::now),
                ))
                .on_conflict(account_deletions::firebase_uid)
                .do_update()
                .set(account_deletions::deleted_at.eq(diesel::dsl::now))
                .execute(conn)
                .await?;
            Ok(Some(user))
        })
        .map_err(PgError::from)?;
        deleted.ok_or(DeleteUserError::NotFound)
    }

    async fn events_about(
        &self,
        uid: &FirebaseUid,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, FindUserError> {
        use crate::schema::outbox;
        // Served by the index on the payload's uid.
        let rows: Vec<(
            uuid::Uuid,
            String,
            String,
            serde_json::Value,
            DateTime<Utc>,
            Option<DateTime<Utc>>,
        )> = run!(self.pool, conn => outbox::table
            .filter(
                diesel::dsl::sql::<diesel::sql_types::Bool>("payload ->> 'uid' = ")
                    .bind::<diesel::sql_types::Text, _>(uid.as_str()),
            )
            .order(outbox::seq.asc())
            .limit(i64::from(limit))
            .select((
                outbox::event_id,
                outbox::topic,
                outbox::event_type,
                outbox::payload,
                outbox::created_at,
                outbox::published_at,
            ))
            .load(conn)
            .await
            .map_err(PgError::from))?;
        Ok(rows
            .into_iter()
            .map(
                |(id, topic, event_type, payload, created_at, published_at)| StoredEvent {
                    event: domain::RawEvent {
                        id,
                        occurred_at: created_at,
                        topic,
                        event_type,
                        payload,
                    },
                    published_at,
                },
            )
            .collect())
    }

    async fn verified_email(&self, uid: &FirebaseUid) -> Result<Option<Email>, FindUserError> {
        let raw: Option<Option<String>> = run!(self.pool, conn => users::table
            .filter(users::firebase_uid.eq(uid.as_str()))
            .select(users::verified_email)
            .get_result(conn)
            .await
            .optional()
            .map_err(PgError::from))?;
        raw.flatten()
            .map(|e| Email::parse(&e))
            .transpose()
            .map_err(|e| FindUserError::Unknown(anyhow::anyhow!("stored verified address: {e}")))
    }

    async fn deleted_at(&self, uid: &FirebaseUid) -> Result<Option<DateTime<Utc>>, FindUserError> {
        let query = account_deletions::table
            .filter(account_deletions::firebase_uid.eq(uid.as_str()))
            .select(account_deletions::deleted_at);
        let at = match &self.reads {
            Some(reads) => shared_read!(reads, conn => query.get_result(conn).await.optional())?,
            None => run!(self.pool, conn => query
                .get_result(conn)
                .await
                .optional()
                .map_err(PgError::from))?,
        };
        Ok(at)
    }

    async fn forget_deletions(
        &self,
        older_than: std::time::Duration,
    ) -> Result<u64, FindUserError> {
        let secs = older_than.as_secs_f64();
        let n = run!(self.pool, conn => diesel::sql_query(
            "DELETE FROM account_deletions WHERE deleted_at < now() - make_interval(secs => $1)",
        )
        .bind::<diesel::sql_types::Double, _>(secs)
        .execute(conn)
        .await
        .map_err(PgError::from))?;
        Ok(n as u64)
    }
}

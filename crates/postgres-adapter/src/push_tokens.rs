//! `PgPushTokenRepository`: FCM tokens by user.

use crate::error::TxError;
use crate::error::{PgError, port_error};
use crate::pool::PgPool;
use crate::rows::{PushTokenRow, UserRow, create_user_or_note_verified};
use crate::schema::{push_tokens, users};
use async_trait::async_trait;
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::{
    FirebaseUid, KeysetPage, Platform, ProfileDefaults, ProfilePatch, PushToken, PushTokenRecord,
};
use ports::{
    DeletePushTokenError, ListPushTokensError, PushTokenKey, PushTokenRepository,
    RegisterPushTokenError, RegisteredPushToken, UnregisterPushTokenError,
};
use uuid::Uuid;

port_error!(
    RegisterPushTokenError,
    UnregisterPushTokenError,
    ListPushTokensError,
    DeletePushTokenError
);

const REGISTER_ATTEMPTS: usize = 3;

/// Push tokens in Postgres.
#[derive(Clone)]
pub struct PgPushTokenRepository {
    pool: PgPool,
}

impl std::fmt::Debug for PgPushTokenRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPushTokenRepository")
            .finish_non_exhaustive()
    }
}

impl PgPushTokenRepository {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// One attempt at a registration, inside a transaction. `Ok(None)`: the user
/// vanished between the insert and the lock (a concurrent delete).
async fn register_once(
    conn: &mut AsyncPgConnection,
    uid: &FirebaseUid,
    token: &PushToken,
    platform: Platform,
    defaults: &ProfileDefaults,
) -> Result<Option<RegisteredPushToken>, TxError> {
    let initial = ProfilePatch::default().or_defaults(defaults);
    let (user_id, user_created) =
        match create_user_or_note_verified(conn, uid, &initial, defaults).await? {
            Some(user) => (user.id.as_uuid(), true),
            None => {
                // FOR SHARE keeps a concurrent delete from removing the user
                // before our token row references it.
                let existing = users::table
                    .filter(users::firebase_uid.eq(uid.as_str()))
                    .select(UserRow::as_select())
                    .for_share()
                    .get_result(conn)
                    .await
                    .optional()?;
                match existing {
                    Some(row) => (row.id, false),
                    None if crate::rows::revoked(conn, uid, defaults.issued_at).await? => {
                        return Err(TxError::AccountDeleted);
                    }
                    None => return Ok(None),
                }
            }
        };
    let row = diesel::insert_into(push_tokens::table)
        .values((
            push_tokens::id.eq(Uuid::now_v7()),
            push_tokens::token.eq(token.as_str()),
            push_tokens::platform.eq(platform.as_str()),
            push_tokens::user_id.eq(user_id),
        ))
        .on_conflict(push_tokens::token)
        .do_update()
        .set((
            push_tokens::user_id.eq(excluded(push_tokens::user_id)),
            push_tokens::platform.eq(excluded(push_tokens::platform)),
            push_tokens::last_seen_at.eq(diesel::dsl::now),
        ))
        .returning(PushTokenRow::as_returning())
        .get_result(conn)
        .await?;
    Ok(Some(RegisteredPushToken {
        record: row.into_domain().map_err(TxError::Data)?,
        user_created,
    }))
}

#[async_trait]
impl PushTokenRepository for PgPushTokenRepository {
    async fn register(
        &self,
        uid: &FirebaseUid,
        token: &PushToken,
        platform: Platform,
        defaults: &ProfileDefaults,
    ) -> Result<RegisteredPushToken, RegisterPushTokenError> {
        for _ in 0..REGISTER_ATTEMPTS {
            let done = match transaction!(self.pool, conn => {
                register_once(conn, uid, token, platform, defaults).await
            }) {
                Err(TxError::AccountDeleted) => {
                    return Err(RegisterPushTokenError::AccountDeleted);
                }
                done => done.map_err(PgError::from)?,
            };
            if let Some(done) = done {
                return Ok(done);
            }
        }
        Err(RegisterPushTokenError::Unavailable(anyhow::anyhow!(
            "user {uid} was deleted under {REGISTER_ATTEMPTS} registrations in a row"
        )))
    }

    async fn unregister(
        &self,
        uid: &FirebaseUid,
        token: &PushToken,
    ) -> Result<(), UnregisterPushTokenError> {
        let owner = users::table
            .filter(users::firebase_uid.eq(uid.as_str()))
            .select(users::id);
        // Once: a repeat after a delete whose answer was lost would say
        // "not found" for a token this call removed.
        let deleted = run!(once self.pool, conn => diesel::delete(
            push_tokens::table
                .filter(push_tokens::token.eq(token.as_str()))
                .filter(push_tokens::user_id.eq_any(owner)),
        )
        .execute(conn)
        .await
        .map_err(PgError::from))?;
        if deleted == 0 {
            return Err(UnregisterPushTokenError::NotFound);
        }
        Ok(())
    }

    async fn list_for_user(
        &self,
        uid: &FirebaseUid,
        after: Option<PushTokenKey>,
        limit: u32,
    ) -> Result<KeysetPage<PushTokenRecord, PushTokenKey>, ListPushTokensError> {
        // Built for each try (a boxed query is used up by running it).
        let query = || {
            let query = push_tokens::table
                .inner_join(users::table)
                .filter(users::firebase_uid.eq(uid.as_str()))
                .select(PushTokenRow::as_select())
                .order_by((push_tokens::created_at, push_tokens::id))
                .limit(i64::from(limit) + 1)
                .into_boxed();
            match after {
                Some(after) => query.filter(
                    push_tokens::created_at
                        .gt(after.created_at)
                        .or(push_tokens::created_at
                            .eq(after.created_at)
                            .and(push_tokens::id.gt(after.id))),
                ),
                None => query,
            }
        };
        let mut rows: Vec<PushTokenRow> =
            run!(self.pool, conn => query().load(conn).await.map_err(PgError::from))?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next = if more {
            rows.last().map(|r| PushTokenKey {
                created_at: r.created_at,
                id: r.id,
            })
        } else {
            None
        };
        let items = rows
            .into_iter()
            .map(PushTokenRow::into_domain)
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(ListPushTokensError::Unknown)?;
        Ok(KeysetPage { items, next })
    }

    async fn delete_token(&self, token: &PushToken) -> Result<bool, DeletePushTokenError> {
        // Once: a repeat would report a removed token as never there.
        let n = run!(once self.pool, conn => diesel::delete(
            push_tokens::table.filter(push_tokens::token.eq(token.as_str()))
        )
        .execute(conn)
        .await
        .map_err(PgError::from))?;
        Ok(n > 0)
    }
}

//! `PgUploadRepository`: the records of uploads (the `UploadRepository`
//! port). Creating and completing one count the user's live pending
//! uploads and completed files under the user row's lock, so concurrent
//! requests cannot exceed the quota; completing an avatar marks the
//! previous one replaced in the same transaction.

use crate::error::TxError;
use crate::error::{PgError, port_error};
use crate::pool::PgPool;
use crate::schema::{uploads, users};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use domain::{Upload, UploadId, UploadPurpose, UploadStatus, UserId};
use ports::{
    CompleteUploadError, CompletedUpload, Completion, CreateUploadError, QuotaUse, UploadQuota,
    UploadRepository, UploadStoreError,
};
use uuid::Uuid;

port_error!(UploadStoreError, CreateUploadError, CompleteUploadError);

#[derive(diesel::QueryableByName)]
struct UsedRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    files: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    bytes: i64,
}

/// What the user's completed uploads take, but for the avatar a new one
/// of `purpose` would replace (call it under the user row's lock).
async fn used(
    conn: &mut diesel_async::AsyncPgConnection,
    user: Uuid,
    purpose: UploadPurpose,
) -> QueryResult<QuotaUse> {
    let row: UsedRow = diesel::sql_query(
        "SELECT count(*) AS files, coalesce(sum(size), 0)::bigint AS bytes
           FROM uploads
          WHERE user_id = $1 AND status = 'completed'
            AND NOT ($2 AND purpose = 'avatar')",
    )
    .bind::<diesel::sql_types::Uuid, _>(user)
    .bind::<diesel::sql_types::Bool, _>(purpose == UploadPurpose::Avatar)
    .get_result(conn)
    .await?;
    Ok(QuotaUse {
        files: u64::try_from(row.files).unwrap_or(0),
        bytes: u64::try_from(row.bytes).unwrap_or(0),
    })
}

/// Locks the user's row (serializing this user's quota checks); false if
/// there is none.
async fn lock_user(conn: &mut diesel_async::AsyncPgConnection, user: Uuid) -> QueryResult<bool> {
    let found: Option<Uuid> = users::table
        .find(user)
        .select(users::id)
        .for_update()
        .first(conn)
        .await
        .optional()?;
    Ok(found.is_some())
}

#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = uploads)]
#[diesel(check_for_backend(diesel::pg::Pg))]
struct UploadRow {
    id: Uuid,
    user_id: Uuid,
    purpose: String,
    object_key: String,
    content_type: String,
    size: i64,
    status: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
    replaced_at: Option<DateTime<Utc>>,
}

impl UploadRow {
    fn from_upload(u: &Upload) -> Self {
        Self {
            id: u.id.0,
            user_id: u.user_id.as_uuid(),
            purpose: u.purpose.as_str().to_owned(),
            object_key: u.object_key.clone(),
            content_type: u.content_type.clone(),
            size: i64::try_from(u.size).unwrap_or(i64::MAX),
            status: u.status.as_str().to_owned(),
            created_at: u.created_at,
            expires_at: u.expires_at,
            completed_at: u.completed_at,
            replaced_at: u.replaced_at,
        }
    }

    fn into_upload(self) -> Result<Upload, anyhow::Error> {
        Ok(Upload {
            id: UploadId(self.id),
            user_id: UserId::from_uuid(self.user_id),
            purpose: UploadPurpose::parse(&self.purpose)
                .map_err(|e| anyhow::anyhow!("upload {}: purpose: {e}", self.id))?,
            object_key: self.object_key,
            content_type: self.content_type,
            size: u64::try_from(self.size).unwrap_or(0),
            status: UploadStatus::parse(&self.status)
                .ok_or_else(|| anyhow::anyhow!("upload {}: status {:?}", self.id, self.status))?,
            created_at: self.created_at,
            expires_at: self.expires_at,
            completed_at: self.completed_at,
            replaced_at: self.replaced_at,
        })
    }
}

fn rows_into(rows: Vec<UploadRow>) -> Result<Vec<Upload>, UploadStoreError> {
    rows.into_iter()
        .map(UploadRow::into_upload)
        .collect::<Result<_, _>>()
        .map_err(UploadStoreError::Unknown)
}

/// Uploads in Postgres.
#[derive(Clone)]
pub struct PgUploadRepository {
    pool: PgPool,
}

impl std::fmt::Debug for PgUploadRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgUploadRepository").finish_non_exhaustive()
    }
}

impl PgUploadRepository {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    async fn one(
        &self,
        filter: impl Fn(
            uploads::BoxedQuery<'static, diesel::pg::Pg>,
        ) -> uploads::BoxedQuery<'static, diesel::pg::Pg>,
    ) -> Result<Option<Upload>, UploadStoreError> {
        let row: Option<UploadRow> = run!(self.pool, conn => filter(uploads::table.into_boxed())
            .select(UploadRow::as_select())
            .first(conn)
            .await
            .optional()
            .map_err(PgError::from))?;
        row.map(UploadRow::into_upload)
            .transpose()
            .map_err(UploadStoreError::Unknown)
    }
}

/// What a creation found under the user's lock.
enum Created {
    Done,
    NoUser,
    Full,
    OverQuota(QuotaUse),
}

/// What a completion found.
enum Completed {
    Missing,
    OverQuota(QuotaUse),
    Done(Box<CompletedUpload>),
}

#[async_trait]
impl UploadRepository for PgUploadRepository {
    async fn create(&self, upload: &Upload, quota: &UploadQuota) -> Result<(), CreateUploadError> {
        let max_pending = quota.max_pending;
        let row = UploadRow::from_upload(upload);
        let user = upload.user_id.as_uuid();
        let outcome = transaction!(self.pool, conn => {
            // The user row's lock serializes this user's creations.
            if !lock_user(conn, user).await? {
                return Ok(Created::NoUser);
            }
            let taken = used(conn, user, upload.purpose).await?;
            if !quota.admits(taken, upload.size) {
                return Ok(Created::OverQuota(taken));
            }
            let pending: i64 = uploads::table
                .filter(uploads::user_id.eq(user))
                .filter(uploads::status.eq(UploadStatus::Pending.as_str()))
                .filter(uploads::expires_at.gt(diesel::dsl::now))
                .count()
                .get_result(conn)
                .await?;
            if pending >= i64::from(max_pending) {
                return Ok(Created::Full);
            }
            diesel::insert_into(uploads::table)
                .values(&row)
                .execute(conn)
                .await?;
            Ok(Created::Done)
        })
        .map_err(PgError::from)?;
        match outcome {
            Created::Done => Ok(()),
            Created::NoUser => Err(CreateUploadError::NoUser),
            Created::Full => Err(CreateUploadError::TooManyPending { max: max_pending }),
            Created::OverQuota(used) => Err(CreateUploadError::QuotaExceeded {
                quota: *quota,
                used,
            }),
        }
    }

    async fn find(&self, user: UserId, id: UploadId) -> Result<Option<Upload>, UploadStoreError> {
        self.one(|q| {
            q.filter(uploads::id.eq(id.0))
                .filter(uploads::user_id.eq(user.as_uuid()))
        })
        .await
    }

    async fn find_any(&self, id: UploadId) -> Result<Option<Upload>, UploadStoreError> {
        self.one(|q| q.filter(uploads::id.eq(id.0))).await
    }

    async fn complete(
        &self,
        user: UserId,
        id: UploadId,
        completion: &Completion,
        quota: &UploadQuota,
    ) -> Result<Option<CompletedUpload>, CompleteUploadError> {
        let now = completion.at;
        let (user, size) = (
            user.as_uuid(),
            i64::try_from(completion.size).unwrap_or(i64::MAX),
        );
        let outcome = transaction!(self.pool, conn => {
            // This user's completions one at a time: the quota holds.
            if !lock_user(conn, user).await? {
                return Ok(Completed::Missing);
            }
            let row: Option<UploadRow> = uploads::table
                .filter(uploads::id.eq(id.0))
                .filter(uploads::user_id.eq(user))
                .select(UploadRow::as_select())
                .for_update()
                .first(conn)
                .await
                .optional()?;
            let Some(row) = row else {
                return Ok(Completed::Missing);
            };
            let upload = row.into_upload().map_err(TxError::Data)?;
            match upload.status {
                UploadStatus::Completed => {
                    return Ok(Completed::Done(Box::new(CompletedUpload {
                        upload,
                        replaced: None,
                    })));
                }
                UploadStatus::Replaced => return Ok(Completed::Missing),
                UploadStatus::Pending => {}
            }
            let taken = used(conn, user, upload.purpose).await?;
            if !quota.admits(taken, completion.size) {
                return Ok(Completed::OverQuota(taken));
            }
            let mut replaced = None;
            if upload.purpose == UploadPurpose::Avatar {
                let old: Vec<UploadRow> = diesel::update(
                    uploads::table
                        .filter(uploads::user_id.eq(user))
                        .filter(uploads::purpose.eq(UploadPurpose::Avatar.as_str()))
                        .filter(uploads::status.eq(UploadStatus::Completed.as_str()))
                        .filter(uploads::id.ne(id.0)),
                )
                .set((
                    uploads::status.eq(UploadStatus::Replaced.as_str()),
                    uploads::replaced_at.eq(now),
                ))
                .returning(UploadRow::as_returning())
                .get_results(conn)
                .await?;
                replaced = old
                    .into_iter()
                    .next()
                    .map(UploadRow::into_upload)
                    .transpose()
                    .map_err(TxError::Data)?;
            }
            let done: UploadRow = diesel::update(uploads::table.find(id.0))
                .set((
                    uploads::status.eq(UploadStatus::Completed.as_str()),
                    uploads::size.eq(size),
                    uploads::completed_at.eq(now),
                    uploads::object_key.eq(&completion.stored_key),
                ))
                .returning(UploadRow::as_returning())
                .get_result(conn)
                .await?;
            Ok(Completed::Done(Box::new(CompletedUpload {
                upload: done.into_upload().map_err(TxError::Data)?,
                replaced,
            })))
        })
        .map_err(PgError::from)?;
        Ok(match outcome {
            Completed::Missing => None,
            Completed::OverQuota(used) => {
                return Err(CompleteUploadError::QuotaExceeded {
                    quota: *quota,
                    used,
                });
            }
            Completed::Done(c) => Some(*c),
        })
    }

    async fn list(&self, user: UserId, limit: u32) -> Result<Vec<Upload>, UploadStoreError> {
        let rows: Vec<UploadRow> = run!(self.pool, conn => uploads::table
            .filter(uploads::user_id.eq(user.as_uuid()))
            .order((uploads::created_at.desc(), uploads::id.desc()))
            .limit(i64::from(limit))
            .select(UploadRow::as_select())
            .load(conn)
            .await
            .map_err(PgError::from))?;
        rows_into(rows)
    }

    async fn stale(
        &self,
        pending_before: DateTime<Utc>,
        replaced_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Upload>, UploadStoreError> {
        let rows: Vec<UploadRow> = run!(self.pool, conn => uploads::table
            .filter(
                uploads::status
                    .eq(UploadStatus::Pending.as_str())
                    .and(uploads::expires_at.lt(pending_before))
                    .or(uploads::status
                        .eq(UploadStatus::Replaced.as_str())
                        .and(uploads::replaced_at.lt(replaced_before))),
            )
            .order(uploads::created_at.asc())
            .limit(i64::from(limit))
            .select(UploadRow::as_select())
            .load(conn)
            .await
            .map_err(PgError::from))?;
        rows_into(rows)
    }

    async fn remove(&self, id: UploadId) -> Result<(), UploadStoreError> {
        run!(self.pool, conn => diesel::delete(uploads::table.find(id.0))
            .execute(conn)
            .await
            .map_err(PgError::from))?;
        Ok(())
    }
}

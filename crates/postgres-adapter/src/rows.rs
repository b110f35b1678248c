//! Diesel rows and their conversion to domain types, plus the statements the
//! repositories share (appending to the outbox, making sure a user exists).

use crate::schema::{push_tokens, users};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::{
    DisplayName, DomainEvent, Email, EmailVerified, FirebaseUid, PhotoUrl, Platform,
    ProfileDefaults, ProfilePatch, PushToken, PushTokenRecord, User, UserCreated, UserId,
};
use uuid::Uuid;

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub(crate) struct UserRow {
    pub id: Uuid,
    pub firebase_uid: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub photo_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The address the identity provider last vouched for; not part of the
    /// profile (see `note_verified_email`).
    pub verified_email: Option<String>,
}

impl UserRow {
    /// A row as stored. Optional fields that no longer parse (written by an
    /// older, laxer version) are dropped with a warning rather than making the
    /// user unreadable; a bad uid is an error.
    pub(crate) fn into_domain(self) -> anyhow::Result<User> {
        let uid = FirebaseUid::parse(&self.firebase_uid)
            .map_err(|e| anyhow::anyhow!("stored uid of user {} is invalid: {e}", self.id))?;
        let id = self.id;
        Ok(User {
            id: UserId::from_uuid(id),
            email: lenient(id, "email", self.email.as_deref(), Email::parse),
            display_name: lenient(
                id,
                "display_name",
                self.display_name.as_deref(),
                DisplayName::parse,
            ),
            photo_url: lenient(id, "photo_url", self.photo_url.as_deref(), PhotoUrl::parse),
            uid,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

fn lenient<T, E: std::fmt::Display>(
    user_id: Uuid,
    field: &str,
    raw: Option<&str>,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Option<T> {
    parse(raw?)
        .map_err(|e| {
            tracing::warn!(%user_id, field, error = %e, "stored profile field is invalid; ignoring it");
        })
        .ok()
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = push_tokens, check_for_backend(diesel::pg::Pg))]
pub(crate) struct PushTokenRow {
    pub id: Uuid,
    pub token: String,
    pub platform: String,
    pub user_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

impl PushTokenRow {
    pub(crate) fn into_domain(self) -> anyhow::Result<PushTokenRecord> {
        Ok(PushTokenRecord {
            token: PushToken::parse(&self.token)
                .map_err(|e| anyhow::anyhow!("stored push token {} is invalid: {e}", self.id))?,
            platform: self.platform.parse::<Platform>().map_err(|e| {
                anyhow::anyhow!("stored platform of token {} is invalid: {e}", self.id)
            })?,
            user_id: UserId::from_uuid(self.user_id),
            created_at: self.created_at,
            last_seen_at: self.last_seen_at,
        })
    }
}

/// Inserts the user unless a row has this uid or the uid's account was
/// deleted after the token was issued (`issued_at`; unknown counts as
/// before). Returns the new row, or `None` (a concurrent transaction's row
/// included: `ON CONFLICT DO NOTHING` waits for it).
const INSERT_USER: &str = "
INSERT INTO users (id, firebase_uid, email, display_name, photo_url, verified_email)
SELECT $1, $2, $3, $4, $5, $6
 WHERE NOT EXISTS (SELECT 1 FROM account_deletions d
                    WHERE d.firebase_uid = $2
                      AND ($7::timestamptz IS NULL OR d.deleted_at >= $7))
ON CONFLICT (firebase_uid) DO NOTHING
RETURNING id, firebase_uid, email, display_name, photo_url, created_at, updated_at, verified_email";

pub(crate) async fn insert_user_if_absent(
    conn: &mut AsyncPgConnection,
    uid: &FirebaseUid,
    initial: &ProfilePatch,
    defaults: &ProfileDefaults,
) -> QueryResult<Option<UserRow>> {
    use diesel::sql_types::{Nullable, Text, Timestamptz, Uuid as SqlUuid};
    diesel::sql_query(INSERT_USER)
        .bind::<SqlUuid, _>(Uuid::now_v7())
        .bind::<Text, _>(uid.as_str())
        .bind::<Nullable<Text>, _>(initial.email.as_ref().map(Email::as_str))
        .bind::<Nullable<Text>, _>(initial.display_name.as_ref().map(DisplayName::as_str))
        .bind::<Nullable<Text>, _>(initial.photo_url.as_ref().map(PhotoUrl::as_str))
        .bind::<Nullable<Text>, _>(defaults.verified_email.as_ref().map(Email::as_str))
        .bind::<Nullable<Timestamptz>, _>(defaults.issued_at)
        .get_result(conn)
        .await
        .optional()
}

/// Whether a token issued at `issued_at` was issued before the uid's
/// account was deleted (on the path where no user row was found).
pub(crate) async fn revoked(
    conn: &mut AsyncPgConnection,
    uid: &FirebaseUid,
    issued_at: Option<DateTime<Utc>>,
) -> QueryResult<bool> {
    use crate::schema::account_deletions as d;
    let deleted: Option<DateTime<Utc>> = d::table
        .filter(d::firebase_uid.eq(uid.as_str()))
        .select(d::deleted_at)
        .get_result(conn)
        .await
        .optional()?;
    Ok(deleted.is_some_and(|at| issued_at.is_none_or(|iat| iat <= at)))
}

/// Inserts the user with `initial` if absent and appends `UserCreated`
/// (carrying the verified address); for an existing user, announces an
/// address the token newly vouches for. Returns the new user, or `None`
/// when one existed.
pub(crate) async fn create_user_or_note_verified(
    conn: &mut AsyncPgConnection,
    uid: &FirebaseUid,
    initial: &ProfilePatch,
    defaults: &ProfileDefaults,
) -> Result<Option<User>, crate::error::TxError> {
    let verified_email = defaults.verified_email.as_ref();
    if let Some(row) = insert_user_if_absent(conn, uid, initial, defaults).await? {
        let user = row.into_domain().map_err(crate::error::TxError::Data)?;
        let event = UserCreated::new(&user, verified_email.is_some());
        crate::outbox::append_event(conn, &DomainEvent::UserCreated(event)).await?;
        return Ok(Some(user));
    }
    note_verified_email(conn, uid, verified_email).await?;
    Ok(None)
}

/// Records `verified` as the user's verified address when it is a new one,
/// appending `EmailVerified` (the profile, and `updated_at`, stay as they
/// are). A conditional update, so two requests at once announce it once;
/// it locks the row first thing, before any other lock the caller takes.
pub(crate) async fn note_verified_email(
    conn: &mut AsyncPgConnection,
    uid: &FirebaseUid,
    verified: Option<&Email>,
) -> Result<(), crate::error::TxError> {
    let Some(email) = verified else {
        return Ok(());
    };
    let row = diesel::update(
        users::table
            .filter(users::firebase_uid.eq(uid.as_str()))
            .filter(users::verified_email.is_distinct_from(email.as_str())),
    )
    .set(users::verified_email.eq(email.as_str()))
    .returning(UserRow::as_returning())
    .get_result(conn)
    .await
    .optional()?;
    if let Some(row) = row {
        let user = row.into_domain().map_err(crate::error::TxError::Data)?;
        let event = EmailVerified::new(&user);
        crate::outbox::append_event(conn, &DomainEvent::EmailVerified(event)).await?;
    }
    Ok(())
}

//! Diesel rows and their conversion to domain types, plus the statements the
//! repositories share (appending to the outbox, making sure a user exists).

use crate::schema::{outbox, push_tokens, users};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::{
    DisplayName, DomainEvent, Email, EmailVerified, FirebaseUid, PhotoUrl, Platform, ProfilePatch,
    PushToken, PushTokenRecord, User, UserCreated, UserId,
};
use uuid::Uuid;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
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
    event: &DomainEvent,
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

/// Inserts the user if no row has this uid. Returns the new row, or `None`
/// when one exists (including one a concurrent transaction just committed:
/// `ON CONFLICT DO NOTHING` waits for it).
pub(crate) async fn insert_user_if_absent(
    conn: &mut AsyncPgConnection,
    uid: &FirebaseUid,
    initial: &ProfilePatch,
    verified_email: Option<&Email>,
) -> QueryResult<Option<UserRow>> {
    diesel::insert_into(users::table)
        .values((
            users::id.eq(Uuid::now_v7()),
            users::firebase_uid.eq(uid.as_str()),
            users::email.eq(initial.email.as_ref().map(Email::as_str)),
            users::display_name.eq(initial.display_name.as_ref().map(DisplayName::as_str)),
            users::photo_url.eq(initial.photo_url.as_ref().map(PhotoUrl::as_str)),
            users::verified_email.eq(verified_email.map(Email::as_str)),
        ))
        .on_conflict(users::firebase_uid)
        .do_nothing()
        .returning(UserRow::as_returning())
        .get_result(conn)
        .await
        .optional()
}

/// Inserts the user with `initial` if absent and appends `UserCreated`
/// (carrying the verified address); for an existing user, announces an
/// address the token newly vouches for. Returns the new user, or `None`
/// when one existed.
pub(crate) async fn create_user_or_note_verified(
    conn: &mut AsyncPgConnection,
    uid: &FirebaseUid,
    initial: &ProfilePatch,
    verified_email: Option<&Email>,
) -> Result<Option<User>, crate::users::TxError> {
    use crate::users::TxError;
    if let Some(row) = insert_user_if_absent(conn, uid, initial, verified_email).await? {
        let user = row.into_domain().map_err(TxError::Data)?;
        let event = UserCreated::new(&user, verified_email.cloned());
        append_event(conn, &DomainEvent::UserCreated(event)).await?;
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
) -> Result<(), crate::users::TxError> {
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
        let user = row.into_domain().map_err(crate::users::TxError::Data)?;
        let event = EmailVerified::new(&user, email.clone());
        append_event(conn, &DomainEvent::EmailVerified(event)).await?;
    }
    Ok(())
}

//! An in-memory user store: users, push tokens and the outbox in one lock,
//! so that "a change and its event commit together" holds here as in Postgres.
//! (One file over 400 lines on purpose: the three ports share that lock and
//! its invariants, and split apart they would each need to reach into it.)

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{
    DomainEvent, Email, EmailVerified, EventEnvelope, FirebaseUid, KeysetPage, Platform,
    ProfileDefaults, ProfilePatch, PushToken, PushTokenRecord, RawEvent, User, UserCreated, UserId,
};
use domain::{Upload, UploadId, UploadPurpose, UploadStatus};
use ports::outbox::{LeaderTerm, Outbox, OutboxError, OutboxRecord};
use ports::storage::{
    CompleteUploadError, CompletedUpload, Completion, CreateUploadError, QuotaUse, UploadQuota,
    UploadRepository, UploadStoreError,
};
use ports::users::*;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Debug)]
struct TokenRow {
    id: Uuid,
    record: PushTokenRecord,
}

#[derive(Debug)]
struct OutboxRow {
    record: OutboxRecord,
    published_at: Option<DateTime<Utc>>,
    leased_until: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    /// The handle that leads the relays, if any, and its term.
    leader: Option<(u64, u64)>,
    /// The last term given to a leader.
    last_term: u64,
    /// Handles made so far (the first is 0).
    handles: u64,
    users: BTreeMap<String, User>,
    /// The address each user's token last vouched for (by uid).
    verified: BTreeMap<String, Email>,
    tokens: Vec<TokenRow>,
    outbox: Vec<OutboxRow>,
    next_seq: i64,
    uploads: Vec<Upload>,
    /// When each uid's account was last deleted (its tombstone).
    deletions: BTreeMap<String, DateTime<Utc>>,
}

impl State {
    /// What the user's completed uploads take, but for the avatar a new
    /// upload of `purpose` would replace.
    fn quota_use(&self, user: UserId, purpose: UploadPurpose) -> QuotaUse {
        let replaced =
            |u: &Upload| purpose == UploadPurpose::Avatar && u.purpose == UploadPurpose::Avatar;
        self.uploads
            .iter()
            .filter(|u| u.user_id == user && u.status == UploadStatus::Completed && !replaced(u))
            .fold(QuotaUse::default(), |acc, u| QuotaUse {
                files: acc.files + 1,
                bytes: acc.bytes + u.size,
            })
    }

    fn append(&mut self, event: DomainEvent) {
        let now = Utc::now();
        self.append_raw(RawEvent::from(&EventEnvelope::new(event, now)));
    }

    fn append_raw(&mut self, event: RawEvent) {
        self.next_seq += 1;
        self.outbox.push(OutboxRow {
            record: OutboxRecord {
                seq: self.next_seq,
                created_at: event.occurred_at,
                event,
            },
            published_at: None,
            leased_until: None,
        });
    }

    /// Creates the user if absent, else announces an address the token
    /// newly vouches for.
    fn ensure_user(
        &mut self,
        uid: &FirebaseUid,
        initial: &ProfilePatch,
        defaults: &ProfileDefaults,
    ) -> Option<(User, bool)> {
        let verified = defaults.verified_email.as_ref();
        if let Some(u) = self.users.get(uid.as_str()).cloned() {
            self.note_verified(&u, verified);
            return Some((u, false));
        }
        let revoked = self
            .deletions
            .get(uid.as_str())
            .is_some_and(|deleted| defaults.issued_at.is_none_or(|iat| iat <= *deleted));
        if revoked {
            return None;
        }
        let now = Utc::now();
        let user = User {
            id: UserId::new(),
            uid: uid.clone(),
            email: initial.email.clone(),
            display_name: initial.display_name.clone(),
            photo_url: initial.photo_url.clone(),
            created_at: now,
            updated_at: now,
        };
        self.users.insert(uid.as_str().to_owned(), user.clone());
        if let Some(v) = verified {
            self.verified.insert(uid.as_str().to_owned(), v.clone());
        }
        self.append(DomainEvent::UserCreated(UserCreated::new(
            &user,
            verified.is_some(),
        )));
        Some((user, true))
    }

    fn note_verified(&mut self, user: &User, verified: Option<&Email>) {
        let Some(email) = verified else { return };
        if self.verified.get(user.uid.as_str()) == Some(email) {
            return;
        }
        self.verified
            .insert(user.uid.as_str().to_owned(), email.clone());
        self.append(DomainEvent::EmailVerified(EmailVerified::new(user)));
    }
}

/// Users, push tokens and the outbox, in memory. Implements
/// [`UserRepository`], [`PushTokenRepository`] and [`Outbox`]. Each value
/// is one *handle* (one process's connection, for relay leadership);
/// [`handle`](Self::handle) makes another on the same data, and dropping the
/// leading handle hands leadership over, as a process's death does.
#[derive(Debug, Default)]
pub struct InMemoryStore {
    state: std::sync::Arc<Mutex<State>>,
    handle: u64,
}

impl Drop for InMemoryStore {
    fn drop(&mut self) {
        let mut s = self.lock();
        if s.leader.is_some_and(|(h, _)| h == self.handle) {
            s.leader = None;
        }
    }
}

impl InMemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Another handle on the same users, tokens and outbox (a second relay).
    pub fn handle(&self) -> Self {
        let handle = {
            let mut s = self.lock();
            s.handles += 1;
            s.handles
        };
        Self {
            state: self.state.clone(),
            handle,
        }
    }

    /// Appends an outbox row as a newer version might write it, with a type
    /// this version need not know.
    pub fn append_raw(&self, event_type: &str, payload: serde_json::Value) -> RawEvent {
        let event = RawEvent {
            id: Uuid::now_v7(),
            occurred_at: Utc::now(),
            topic: domain::events::USERS_TOPIC.to_owned(),
            event_type: event_type.to_owned(),
            payload,
        };
        self.lock().append_raw(event.clone());
        event
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock already failed.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every event appended so far, published or not, in order (rows of
    /// types this version does not know are left out).
    pub fn events(&self) -> Vec<EventEnvelope> {
        self.lock()
            .outbox
            .iter()
            .filter_map(|r| r.record.event.decode().ok())
            .collect()
    }
}

#[async_trait]
impl UserRepository for InMemoryStore {
    async fn find_by_uid(&self, uid: &FirebaseUid) -> Result<Option<User>, FindUserError> {
        Ok(self.lock().users.get(uid.as_str()).cloned())
    }

    async fn upsert_profile(
        &self,
        uid: &FirebaseUid,
        patch: &ProfilePatch,
        defaults: &ProfileDefaults,
    ) -> Result<UpsertedProfile, UpsertProfileError> {
        let mut s = self.lock();
        let verified = defaults.verified_email.as_ref();
        if !s.users.contains_key(uid.as_str()) {
            let (user, _) = s
                .ensure_user(uid, &patch.or_defaults(defaults), defaults)
                .ok_or(UpsertProfileError::AccountDeleted)?;
            return Ok(UpsertedProfile {
                user,
                outcome: UpsertOutcome::Created,
            });
        }
        let current = s.users.get(uid.as_str()).cloned().ok_or_else(|| {
            UpsertProfileError::Unknown(anyhow::anyhow!("user vanished under the lock"))
        })?;
        s.note_verified(&current, verified);
        if !current.would_change(patch) {
            return Ok(UpsertedProfile {
                user: current,
                outcome: UpsertOutcome::Unchanged,
            });
        }
        let next = current.patched(patch);
        let user = User {
            email: next.email,
            display_name: next.display_name,
            photo_url: next.photo_url,
            updated_at: Utc::now(),
            ..current
        };
        s.users.insert(uid.as_str().to_owned(), user.clone());
        s.append(DomainEvent::ProfileUpdated((&user).into()));
        Ok(UpsertedProfile {
            user,
            outcome: UpsertOutcome::Updated,
        })
    }

    async fn delete_by_uid(&self, uid: &FirebaseUid) -> Result<User, DeleteUserError> {
        let mut s = self.lock();
        let user = s
            .users
            .remove(uid.as_str())
            .ok_or(DeleteUserError::NotFound)?;
        s.verified.remove(uid.as_str());
        s.tokens.retain(|t| t.record.user_id != user.id);
        s.uploads.retain(|u| u.user_id != user.id);
        s.append(DomainEvent::UserDeleted((&user).into()));
        s.deletions.insert(uid.as_str().to_owned(), Utc::now());
        Ok(user)
    }

    async fn events_about(
        &self,
        uid: &FirebaseUid,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, FindUserError> {
        Ok(self
            .lock()
            .outbox
            .iter()
            .filter(|r| r.record.event.payload["uid"].as_str() == Some(uid.as_str()))
            .take(limit as usize)
            .map(|r| StoredEvent {
                event: r.record.event.clone(),
                published_at: r.published_at,
            })
            .collect())
    }

    async fn verified_email(&self, uid: &FirebaseUid) -> Result<Option<Email>, FindUserError> {
        let s = self.lock();
        Ok(s.users
            .contains_key(uid.as_str())
            .then(|| s.verified.get(uid.as_str()).cloned())
            .flatten())
    }

    async fn deleted_at(&self, uid: &FirebaseUid) -> Result<Option<DateTime<Utc>>, FindUserError> {
        Ok(self.lock().deletions.get(uid.as_str()).copied())
    }

    async fn forget_deletions(&self, older_than: Duration) -> Result<u64, FindUserError> {
        let cutoff =
            Utc::now() - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
        let mut s = self.lock();
        let before = s.deletions.len();
        s.deletions.retain(|_, at| *at > cutoff);
        Ok((before - s.deletions.len()) as u64)
    }
}

#[async_trait]
impl PushTokenRepository for InMemoryStore {
    async fn register(
        &self,
        uid: &FirebaseUid,
        token: &PushToken,
        platform: Platform,
        defaults: &ProfileDefaults,
    ) -> Result<RegisteredPushToken, RegisterPushTokenError> {
        let mut s = self.lock();
        let (user, user_created) = s
            .ensure_user(
                uid,
                &ProfilePatch::default().or_defaults(defaults),
                defaults,
            )
            .ok_or(RegisterPushTokenError::AccountDeleted)?;
        let now = Utc::now();
        let record = match s.tokens.iter_mut().find(|t| &t.record.token == token) {
            Some(row) => {
                row.record.user_id = user.id;
                row.record.platform = platform;
                row.record.last_seen_at = now;
                row.record.clone()
            }
            None => {
                let record = PushTokenRecord {
                    token: token.clone(),
                    platform,
                    user_id: user.id,
                    created_at: now,
                    last_seen_at: now,
                };
                s.tokens.push(TokenRow {
                    id: Uuid::now_v7(),
                    record: record.clone(),
                });
                record
            }
        };
        Ok(RegisteredPushToken {
            record,
            user_created,
        })
    }

    async fn unregister(
        &self,
        uid: &FirebaseUid,
        token: &PushToken,
    ) -> Result<(), UnregisterPushTokenError> {
        let mut s = self.lock();
        let user_id = s
            .users
            .get(uid.as_str())
            .map(|u| u.id)
            .ok_or(UnregisterPushTokenError::NotFound)?;
        let before = s.tokens.len();
        s.tokens
            .retain(|t| !(t.record.token == *token && t.record.user_id == user_id));
        if s.tokens.len() == before {
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
        let s = self.lock();
        let Some(user_id) = s.users.get(uid.as_str()).map(|u| u.id) else {
            return Ok(KeysetPage {
                items: vec![],
                next: None,
            });
        };
        let mut rows: Vec<(PushTokenKey, &PushTokenRecord)> = s
            .tokens
            .iter()
            .filter(|t| t.record.user_id == user_id)
            .map(|t| {
                (
                    PushTokenKey {
                        created_at: t.record.created_at,
                        id: t.id,
                    },
                    &t.record,
                )
            })
            .filter(|(k, _)| after.is_none_or(|a| (k.created_at, k.id) > (a.created_at, a.id)))
            .collect();
        rows.sort_by_key(|(k, _)| (k.created_at, k.id));
        let limit = limit as usize;
        let next = (rows.len() > limit).then(|| rows[limit - 1].0);
        Ok(KeysetPage {
            items: rows
                .into_iter()
                .take(limit)
                .map(|(_, r)| r.clone())
                .collect(),
            next,
        })
    }

    async fn delete_token(&self, token: &PushToken) -> Result<bool, DeletePushTokenError> {
        let mut s = self.lock();
        let before = s.tokens.len();
        s.tokens.retain(|t| t.record.token != *token);
        Ok(s.tokens.len() != before)
    }
}

#[async_trait]
impl Outbox for InMemoryStore {
    async fn lead(&self) -> Result<Option<LeaderTerm>, OutboxError> {
        let mut s = self.lock();
        match s.leader {
            Some((h, term)) if h == self.handle => Ok(Some(LeaderTerm(term))),
            Some(_) => Ok(None),
            None => {
                s.last_term += 1;
                let term = s.last_term;
                s.leader = Some((self.handle, term));
                // The previous leader is gone: its leases are void.
                for row in s.outbox.iter_mut().filter(|r| r.published_at.is_none()) {
                    row.leased_until = None;
                }
                Ok(Some(LeaderTerm(term)))
            }
        }
    }

    async fn resign(&self) {
        let mut s = self.lock();
        if s.leader.is_some_and(|(h, _)| h == self.handle) {
            s.leader = None;
        }
    }

    async fn claim(&self, limit: u32, lease: Duration) -> Result<Vec<OutboxRecord>, OutboxError> {
        let mut s = self.lock();
        let now = Instant::now();
        let mut out = Vec::new();
        for row in s.outbox.iter_mut() {
            if out.len() >= limit as usize {
                break;
            }
            let free = row.published_at.is_none() && row.leased_until.is_none_or(|t| t <= now);
            if free {
                row.leased_until = Some(now + lease);
                out.push(row.record.clone());
            }
        }
        Ok(out)
    }

    async fn mark_published(&self, seqs: &[i64]) -> Result<(), OutboxError> {
        let mut s = self.lock();
        let now = Utc::now();
        for row in s.outbox.iter_mut().filter(|r| seqs.contains(&r.record.seq)) {
            row.published_at.get_or_insert(now);
            row.leased_until = None;
        }
        Ok(())
    }

    async fn release(&self, seqs: &[i64]) -> Result<(), OutboxError> {
        let mut s = self.lock();
        for row in s.outbox.iter_mut().filter(|r| seqs.contains(&r.record.seq)) {
            row.leased_until = None;
        }
        Ok(())
    }

    async fn prune_published(&self, before: DateTime<Utc>) -> Result<u64, OutboxError> {
        let mut s = self.lock();
        let n = s.outbox.len();
        s.outbox
            .retain(|r| r.published_at.is_none_or(|p| p >= before));
        Ok((n - s.outbox.len()) as u64)
    }

    async fn backlog(&self) -> Result<u64, OutboxError> {
        Ok(self
            .lock()
            .outbox
            .iter()
            .filter(|r| r.published_at.is_none())
            .count() as u64)
    }

    async fn wait_for_rows(&self, timeout: Duration) {
        tokio::time::sleep(timeout.min(Duration::from_millis(20))).await;
    }
}

#[async_trait]
impl UploadRepository for InMemoryStore {
    async fn create(&self, upload: &Upload, quota: &UploadQuota) -> Result<(), CreateUploadError> {
        let max_pending = quota.max_pending;
        let mut s = self.lock();
        if !s.users.values().any(|u| u.id == upload.user_id) {
            return Err(CreateUploadError::NoUser);
        }
        let used = s.quota_use(upload.user_id, upload.purpose);
        if !quota.admits(used, upload.size) {
            return Err(CreateUploadError::QuotaExceeded {
                quota: *quota,
                used,
            });
        }
        let now = Utc::now();
        let pending = s
            .uploads
            .iter()
            .filter(|u| {
                u.user_id == upload.user_id
                    && u.status == UploadStatus::Pending
                    && u.expires_at > now
            })
            .count();
        if pending >= max_pending as usize {
            return Err(CreateUploadError::TooManyPending { max: max_pending });
        }
        s.uploads.push(upload.clone());
        Ok(())
    }

    async fn find(&self, user: UserId, id: UploadId) -> Result<Option<Upload>, UploadStoreError> {
        Ok(self
            .lock()
            .uploads
            .iter()
            .find(|u| u.id == id && u.user_id == user)
            .cloned())
    }

    async fn find_any(&self, id: UploadId) -> Result<Option<Upload>, UploadStoreError> {
        Ok(self.lock().uploads.iter().find(|u| u.id == id).cloned())
    }

    async fn complete(
        &self,
        user: UserId,
        id: UploadId,
        completion: &Completion,
        quota: &UploadQuota,
    ) -> Result<Option<CompletedUpload>, CompleteUploadError> {
        let (size, now) = (completion.size, completion.at);
        let mut s = self.lock();
        let Some(i) = s
            .uploads
            .iter()
            .position(|u| u.id == id && u.user_id == user)
        else {
            return Ok(None);
        };
        match s.uploads[i].status {
            UploadStatus::Completed => {
                return Ok(Some(CompletedUpload {
                    upload: s.uploads[i].clone(),
                    replaced: None,
                }));
            }
            UploadStatus::Replaced => return Ok(None),
            UploadStatus::Pending => {}
        }
        let used = s.quota_use(user, s.uploads[i].purpose);
        if !quota.admits(used, size) {
            return Err(CompleteUploadError::QuotaExceeded {
                quota: *quota,
                used,
            });
        }
        let mut replaced = None;
        if s.uploads[i].purpose == UploadPurpose::Avatar {
            for u in &mut s.uploads {
                if u.user_id == user
                    && u.id != id
                    && u.purpose == UploadPurpose::Avatar
                    && u.status == UploadStatus::Completed
                {
                    u.status = UploadStatus::Replaced;
                    u.replaced_at = Some(now);
                    replaced = Some(u.clone());
                }
            }
        }
        let u = &mut s.uploads[i];
        u.status = UploadStatus::Completed;
        u.size = size;
        u.completed_at = Some(now);
        u.object_key.clone_from(&completion.stored_key);
        Ok(Some(CompletedUpload {
            upload: u.clone(),
            replaced,
        }))
    }

    async fn list(&self, user: UserId, limit: u32) -> Result<Vec<Upload>, UploadStoreError> {
        let s = self.lock();
        let mut mine: Vec<Upload> = s
            .uploads
            .iter()
            .filter(|u| u.user_id == user)
            .cloned()
            .collect();
        mine.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        mine.truncate(limit as usize);
        Ok(mine)
    }

    async fn stale(
        &self,
        pending_before: DateTime<Utc>,
        replaced_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Upload>, UploadStoreError> {
        let s = self.lock();
        let mut old: Vec<Upload> = s
            .uploads
            .iter()
            .filter(|u| match u.status {
                UploadStatus::Pending => u.expires_at < pending_before,
                UploadStatus::Replaced => u.replaced_at.is_some_and(|t| t < replaced_before),
                UploadStatus::Completed => false,
            })
            .cloned()
            .collect();
        old.sort_by_key(|u| u.created_at);
        old.truncate(limit as usize);
        Ok(old)
    }

    async fn remove(&self, id: UploadId) -> Result<(), UploadStoreError> {
        self.lock().uploads.retain(|u| u.id != id);
        Ok(())
    }
}

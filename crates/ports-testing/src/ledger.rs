//! `InMemoryWelcomeLedger`: the `WelcomeLedger` port in memory, passing the
//! same contract as the Postgres ledger.

use async_trait::async_trait;
use domain::{Email, FirebaseUid};
use ports::mail::{
    ClaimWelcomeOutcome, SendHolder, WelcomeLedger, WelcomeLedgerError, WelcomeRecord,
};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Record {
    /// `None` once forgotten.
    recipient: Option<String>,
    holder: SendHolder,
    claimed_at: Instant,
    sent: bool,
    /// The wall-clock times the export shows.
    claimed_wall: chrono::DateTime<chrono::Utc>,
    sent_wall: Option<chrono::DateTime<chrono::Utc>>,
}

/// Welcome mail claims in memory. Like the real ledger it keys records by
/// a digest of the uid and of the lower-cased address, not the values.
#[derive(Debug, Default)]
pub struct InMemoryWelcomeLedger {
    records: Mutex<HashMap<String, Record>>,
}

fn digest(text: &str) -> String {
    // Not a cryptographic hash: the fake only shows the shape.
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    format!("{:016x}", h.finish())
}

impl InMemoryWelcomeLedger {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Record>> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl WelcomeLedger for InMemoryWelcomeLedger {
    async fn claim(
        &self,
        uid: &FirebaseUid,
        to: &Email,
        holder: SendHolder,
        recipient_window: Duration,
        stale_after: Duration,
    ) -> Result<ClaimWelcomeOutcome, WelcomeLedgerError> {
        let (key, recipient) = (digest(uid.as_str()), digest(&to.as_str().to_lowercase()));
        let mut records = self.lock();
        let now = Instant::now();
        if let Some(r) = records.get_mut(&key) {
            if r.sent {
                return Ok(ClaimWelcomeOutcome::AlreadySent);
            }
            let ours = r.holder.job == holder.job && r.holder.lease <= holder.lease;
            let stale = now.duration_since(r.claimed_at) >= stale_after;
            if !ours && !stale {
                let left = stale_after.saturating_sub(now.duration_since(r.claimed_at));
                return Ok(ClaimWelcomeOutcome::Busy { retry_after: left });
            }
            r.holder = holder;
            r.recipient = Some(recipient);
            r.claimed_at = now;
            r.claimed_wall = chrono::Utc::now();
            return Ok(ClaimWelcomeOutcome::Claimed);
        }
        let recent = records.values().any(|r| {
            r.recipient.as_deref() == Some(recipient.as_str())
                && now.duration_since(r.claimed_at) < recipient_window
        });
        if recent {
            return Ok(ClaimWelcomeOutcome::RecipientMailedRecently);
        }
        records.insert(
            key,
            Record {
                recipient: Some(recipient),
                holder,
                claimed_at: now,
                sent: false,
                claimed_wall: chrono::Utc::now(),
                sent_wall: None,
            },
        );
        Ok(ClaimWelcomeOutcome::Claimed)
    }

    async fn mark_sent(
        &self,
        uid: &FirebaseUid,
        holder: SendHolder,
    ) -> Result<(), WelcomeLedgerError> {
        if let Some(r) = self.lock().get_mut(&digest(uid.as_str()))
            && r.holder == holder
            && !r.sent
        {
            r.sent = true;
            r.sent_wall = Some(chrono::Utc::now());
        }
        Ok(())
    }

    async fn release(
        &self,
        uid: &FirebaseUid,
        holder: SendHolder,
    ) -> Result<(), WelcomeLedgerError> {
        let mut records = self.lock();
        let key = digest(uid.as_str());
        if records
            .get(&key)
            .is_some_and(|r| !r.sent && r.holder == holder)
        {
            records.remove(&key);
        }
        Ok(())
    }

    async fn record(&self, uid: &FirebaseUid) -> Result<Option<WelcomeRecord>, WelcomeLedgerError> {
        Ok(self
            .lock()
            .get(&digest(uid.as_str()))
            .map(|r| WelcomeRecord {
                claimed_at: r.claimed_wall,
                sent_at: r.sent_wall,
            }))
    }

    async fn forget_recipients(&self, window: Duration) -> Result<u64, WelcomeLedgerError> {
        let now = Instant::now();
        let mut forgotten = 0;
        for r in self.lock().values_mut() {
            if r.recipient.is_some() && now.duration_since(r.claimed_at) >= window {
                r.recipient = None;
                forgotten += 1;
            }
        }
        Ok(forgotten)
    }
}

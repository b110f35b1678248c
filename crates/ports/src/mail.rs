//! Sending mail.

use async_trait::async_trait;
use domain::Mail;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SendMailError {
    /// The server refused the mail for good (a 5xx reply, an address it will
    /// never accept). Retrying cannot help. Holds the server's reply.
    #[error("mail rejected: {reply}")]
    Rejected { reply: String },
    /// A temporary failure (a 4xx reply, connection refused or lost, a
    /// timeout). Retrying later may succeed. Holds what happened.
    #[error("mail server unavailable: {reason}")]
    Unavailable { reason: String },
    #[error(transparent)]
    Unknown(anyhow::Error),
}

/// Renders and delivers mail.
#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    /// Renders `mail` and hands it to the mail server.
    ///
    /// MUST return `Rejected` for permanent refusals and `Unavailable` for
    /// transient ones, so the caller knows whether to retry. Returning `Ok`
    /// means the server accepted the message.
    async fn send(&self, mail: &Mail) -> Result<(), SendMailError>;
}

/// Who holds the right to send a welcome mail: one attempt of one job,
/// named by the job and its lease's fencing number (which grows with every
/// fetch of the job, so a later attempt of the same job has a larger one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendHolder {
    pub job: crate::JobId,
    pub lease: u64,
}

/// What claiming a welcome mail found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimWelcomeOutcome {
    /// The claim is the caller's: send, then `mark_sent` (or `release` if
    /// the mail did not go out).
    Claimed,
    /// This uid's welcome mail went out already, perhaps under an account
    /// deleted since. Never send another.
    AlreadySent,
    /// Another uid's welcome mail went to this address within the window.
    RecipientMailedRecently,
    /// Another attempt holds the claim and may be sending right now: ask
    /// again after `retry_after`.
    Busy { retry_after: std::time::Duration },
}

#[derive(Debug, Error)]
pub enum WelcomeLedgerError {
    #[error("welcome mail ledger unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

/// The durable record of welcome mails: at most one per Firebase uid, ever,
/// and at most one per recipient address within a window, whatever the uid.
///
/// Implementations MUST NOT store a uid or an address in the clear: a
/// record outlives the account it was about (a deleted user's uid must stay
/// known as "welcomed", but nothing more about them).
#[async_trait]
pub trait WelcomeLedger: Send + Sync + 'static {
    /// Claims the right to send `uid`'s welcome mail to `to` for `holder`.
    ///
    /// MUST return `AlreadySent` once `mark_sent` succeeded for this uid,
    /// whoever holds it now and however long ago; `RecipientMailedRecently`
    /// when another uid's claim on `to` (sent, or still being sent) is newer
    /// than `recipient_window`; `Busy` while another holder's claim is live.
    /// A claim held by an earlier lease of the *same* job is void (that
    /// lease was recovered: its worker died or stalled) and MUST be taken
    /// over at once. A claim held by another job is taken over once it is
    /// older than `stale_after`. Concurrent claims for one uid, or for one
    /// address under different uids, MUST give `Claimed` to at most one.
    async fn claim(
        &self,
        uid: &domain::FirebaseUid,
        to: &domain::Email,
        holder: SendHolder,
        recipient_window: std::time::Duration,
        stale_after: std::time::Duration,
    ) -> Result<ClaimWelcomeOutcome, WelcomeLedgerError>;

    /// Records that the mail went out. Idempotent; MUST succeed for the
    /// claim's holder and do nothing for anyone else.
    async fn mark_sent(
        &self,
        uid: &domain::FirebaseUid,
        holder: SendHolder,
    ) -> Result<(), WelcomeLedgerError>;

    /// Gives the claim up (the mail did not go out). Does nothing unless
    /// `holder` holds it.
    async fn release(
        &self,
        uid: &domain::FirebaseUid,
        holder: SendHolder,
    ) -> Result<(), WelcomeLedgerError>;

    /// Forgets the addresses of claims older than `window` (their uids stay
    /// known). Returns how many were forgotten.
    async fn forget_recipients(
        &self,
        window: std::time::Duration,
    ) -> Result<u64, WelcomeLedgerError>;

    /// What the ledger holds about `uid`'s welcome mail (for the user's own
    /// data export): when it was claimed and when it went out.
    async fn record(
        &self,
        uid: &domain::FirebaseUid,
    ) -> Result<Option<WelcomeRecord>, WelcomeLedgerError>;
}

/// A welcome mail as the ledger keeps it (no address: only its digest is
/// stored, and forgotten after the recipient window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct WelcomeRecord {
    pub claimed_at: chrono::DateTime<chrono::Utc>,
    pub sent_at: Option<chrono::DateTime<chrono::Utc>>,
}

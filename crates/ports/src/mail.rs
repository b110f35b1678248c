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

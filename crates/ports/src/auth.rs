//! Verifying the ID tokens clients send.

use async_trait::async_trait;
use domain::{FirebaseUid, VerifiedIdentity};
use thiserror::Error;

/// Why a token was refused. Logged, never sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidToken {
    #[error("no token")]
    Missing,
    #[error("token longer than the size limit")]
    TooLong,
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("algorithm {0} is not accepted")]
    UnsupportedAlgorithm(String),
    #[error("header has no kid")]
    MissingKeyId,
    #[error("kid is not in the current key set")]
    UnknownKeyId,
    #[error("signature does not verify")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("auth_time in the future")]
    AuthTimeInFuture,
    #[error("wrong audience")]
    WrongAudience,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("subject is empty or too long")]
    BadSubject,
    #[error("a required claim is missing or has the wrong type: {0}")]
    BadClaim(String),
    #[error("emulator tokens are only accepted in emulator mode")]
    EmulatorTokenRefused,
    #[error("dev tokens are only accepted in local mode")]
    DevTokenRefused,
}

#[derive(Debug, Error)]
pub enum VerifyTokenError {
    #[error("invalid token: {0}")]
    Invalid(#[from] InvalidToken),
    /// The signing keys could not be fetched and none are cached: the token
    /// may be valid, but cannot be checked now.
    #[error("token keys unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

#[async_trait]
pub trait TokenVerifier: Send + Sync + 'static {
    /// Verifies `token` (the bare JWT, without `Bearer `).
    ///
    /// MUST return `Invalid` with the reason for every token that is not
    /// provably valid, and `Unavailable` only when keys are needed and cannot
    /// be had. MUST NOT do network I/O for a token it can refuse without keys.
    async fn verify(&self, token: &str) -> Result<VerifiedIdentity, VerifyTokenError>;

    /// The identity of a token this verifier has already proven and still
    /// trusts, found without a signature check or any I/O; `None` when only
    /// `verify` can tell. Callers use it to spend rate-limit budget on the
    /// expensive path only. MUST NOT return an identity `verify` would refuse.
    fn verify_cached(&self, token: &str) -> Option<VerifiedIdentity> {
        let _ = token;
        None
    }
}

#[derive(Debug, Error)]
pub enum IdentityAdminError {
    /// The identity provider could not be reached or answered 5xx/429.
    #[error("identity provider unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// It refused (credentials, project): retrying will not help.
    #[error(transparent)]
    Unknown(anyhow::Error),
}

/// Administers the accounts of the identity provider (Firebase Auth).
#[async_trait]
pub trait IdentityAdmin: Send + Sync + 'static {
    /// Deletes the account `uid`; an account that no longer exists is
    /// not an error (deleting is idempotent).
    async fn delete_user(&self, uid: &FirebaseUid) -> Result<(), IdentityAdminError>;

    /// What it talks to, for logs (no secrets).
    fn describe(&self) -> String;
}

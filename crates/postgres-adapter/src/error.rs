//! Classifying driver errors into "retry later" and "something is wrong".
//! Driver error types stay in this crate; ports see `Unavailable`/`Unknown`.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::deadpool::PoolError;

/// An adapter-internal error: either Postgres cannot be used right now, or
/// something unexpected happened.
#[derive(Debug)]
pub(crate) enum PgError {
    Unavailable(anyhow::Error),
    Unknown(anyhow::Error),
}

/// Messages of server errors that mean "the connection or server went away"
/// (admin shutdown, crash recovery, statement timeout, too many clients).
const TRANSIENT_MESSAGES: &[&str] = &[
    "terminating connection",
    "the database system is",
    "canceling statement due to statement timeout",
    "sorry, too many clients",
    "server closed the connection",
    "connection closed",
];

pub(crate) fn is_transient(e: &DieselError) -> bool {
    match e {
        DieselError::DatabaseError(kind, info) => match kind {
            DatabaseErrorKind::ClosedConnection
            | DatabaseErrorKind::UnableToSendCommand
            | DatabaseErrorKind::SerializationFailure => true,
            DatabaseErrorKind::Unknown => {
                let msg = info.message();
                TRANSIENT_MESSAGES.iter().any(|m| msg.contains(m))
            }
            _ => false,
        },
        DieselError::BrokenTransactionManager => true,
        _ => false,
    }
}

impl From<DieselError> for PgError {
    fn from(e: DieselError) -> Self {
        if is_transient(&e) {
            PgError::Unavailable(e.into())
        } else {
            PgError::Unknown(e.into())
        }
    }
}

impl From<PoolError> for PgError {
    /// Timeouts, failed connects, a failed recycle check, a closed pool: all
    /// mean "no usable connection now, try later".
    fn from(e: PoolError) -> Self {
        PgError::Unavailable(anyhow::Error::new(e).context("no Postgres connection"))
    }
}

impl PgError {
    /// Whether this is a lost connection (see `session::lost_connection`).
    pub(crate) fn lost_connection(&self) -> bool {
        match self {
            PgError::Unavailable(e) => e
                .downcast_ref::<DieselError>()
                .is_some_and(crate::session::lost_connection),
            PgError::Unknown(_) => false,
        }
    }

    pub(crate) fn into_parts(self) -> (bool, anyhow::Error) {
        match self {
            PgError::Unavailable(e) => (true, e),
            PgError::Unknown(e) => (false, e),
        }
    }
}

/// Implements `From<PgError>` for a port error enum with `Unavailable` and
/// `Unknown` variants.
macro_rules! port_error {
    ($($ty:ty),* $(,)?) => {$(
        impl From<$crate::error::PgError> for $ty {
            fn from(e: $crate::error::PgError) -> Self {
                match e.into_parts() {
                    (true, e) => <$ty>::Unavailable(e),
                    (false, e) => <$ty>::Unknown(e),
                }
            }
        }
    )*};
}
pub(crate) use port_error;

/// Errors inside a transaction: the database's, or a row we cannot read.
#[derive(Debug)]
pub(crate) enum TxError {
    Db(diesel::result::Error),
    Data(anyhow::Error),
    /// The uid's account was deleted after the token was issued.
    AccountDeleted,
    /// No connection to run it on.
    Pg(PgError),
}

impl TxError {
    /// Whether the connection was lost (see `session::lost_connection`).
    pub(crate) fn lost_connection(&self) -> bool {
        match self {
            TxError::Db(e) => crate::session::lost_connection(e),
            TxError::Pg(e) => e.lost_connection(),
            TxError::Data(_) | TxError::AccountDeleted => false,
        }
    }
}

impl From<diesel::result::Error> for TxError {
    fn from(e: diesel::result::Error) -> Self {
        TxError::Db(e)
    }
}

impl From<TxError> for PgError {
    fn from(e: TxError) -> Self {
        match e {
            TxError::Db(e) => e.into(),
            TxError::Data(e) => PgError::Unknown(e),
            TxError::Pg(e) => e,
            // Mapped to the port's own variant before this; never reached.
            TxError::AccountDeleted => PgError::Unknown(anyhow::anyhow!("the account was deleted")),
        }
    }
}

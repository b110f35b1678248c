//! How statements run on a pooled connection, directly to Postgres or
//! through a transaction pooler (PgBouncer in transaction mode, Supavisor,
//! Neon's `-pooler` endpoint, RDS Proxy).
//!
//! Through a pooler a server connection is ours for one transaction only.
//! A statement outside a transaction is prepared and then executed in two
//! exchanges, which the pooler may send to two different server
//! connections; a session `SET` lands on whichever. So there, every
//! operation runs in a transaction (the pooler keeps it on one server
//! connection) that first sets the statement timeout (`SET LOCAL`, the
//! simple protocol: no prepared statement), and prepared statements are not
//! cached across transactions. Directly, statements run as they are and the
//! timeout is the session's.

use crate::pool::PgPool;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AnsiTransactionManager, AsyncPgConnection, TransactionManager as _};

/// Whether `e` means the connection was lost, not that the statement
/// failed: the driver had no connection left to send on or hear from
/// (closed by the server while it sat idle in the pool, by a load
/// balancer, by a restart), or the server ended the session while the
/// statement ran (`terminating connection ...`, which rolls back whatever
/// that session had not committed).
pub(crate) fn lost_connection(e: &DieselError) -> bool {
    match e {
        DieselError::DatabaseError(
            DatabaseErrorKind::UnableToSendCommand | DatabaseErrorKind::ClosedConnection,
            _,
        ) => true,
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, info) => {
            info.message().starts_with("terminating connection")
        }
        _ => false,
    }
}

/// Opens a transaction: `BEGIN` directly; through a pooler `BEGIN; SET
/// LOCAL statement_timeout` in one exchange (one simple-protocol batch).
/// Either way diesel's transaction manager knows a transaction is open (a
/// connection returned to the pool inside one is dropped by its recycle
/// check).
pub(crate) async fn begin(conn: &mut AsyncPgConnection, pool: &PgPool) -> diesel::QueryResult<()> {
    match pool.pooler() {
        None => AnsiTransactionManager::begin_transaction(conn).await,
        Some(timeout) => {
            AnsiTransactionManager::begin_transaction_sql(
                conn,
                &format!(
                    "BEGIN; SET LOCAL statement_timeout = {}",
                    timeout.as_millis()
                ),
            )
            .await
        }
    }
}

/// Ends what [`begin`] began: `COMMIT` after `Ok`, `ROLLBACK` after an
/// error (whose error is the one returned).
pub(crate) async fn end<T, E: From<DieselError>>(
    conn: &mut AsyncPgConnection,
    result: Result<T, E>,
) -> Result<T, E> {
    match result {
        Ok(v) => {
            AnsiTransactionManager::commit_transaction(conn).await?;
            Ok(v)
        }
        Err(e) => {
            // A lost connection cannot roll back; the server does it.
            let _ = AnsiTransactionManager::rollback_transaction(conn).await;
            Err(e)
        }
    }
}

/// One line when an operation goes again on a fresh connection.
pub(crate) fn note_retry(error: &dyn std::fmt::Debug) {
    metrics::counter!("db_lost_connection_retries_total").increment(1);
    tracing::info!(
        error = ?error,
        "a pooled Postgres connection was lost before the operation could take effect; trying once more on a fresh one"
    );
}

/// `run!(pool, conn => body)`: `body` (one statement: an expression of
/// `Result<_, PgError>` that uses `conn: &mut AsyncPgConnection`) on a
/// connection from `pool`; as it is directly, in a transaction through a
/// pooler. `?` in `body` ends `body`, in both cases.
///
/// When the connection turns out to be lost (see [`lost_connection`]),
/// `body` runs once more on a fresh connection (one opened after the loss:
/// see `PgPool::get_fresh`), where that cannot apply it
/// twice:
/// - through a pooler, whenever the failure came before `COMMIT` was sent
///   (a transaction that never committed left nothing behind); when
///   `COMMIT` itself failed, whose outcome is unknown, only if the body is
///   safe to repeat (not `once`): a read, or a repeatable write;
/// - directly, where the statement commits by itself, only if it is safe
///   to repeat: a read, or a write that a second run leaves as the first
///   did. A lost connection cannot tell "never reached the server" from
///   "ran, and the answer was lost", so a statement whose answer would be
///   wrong the second time (a delete reporting what it deleted, a claim
///   that leases rows) is written `run!(once pool, conn => body)` and is
///   not repeated directly.
macro_rules! run {
    (once $pool:expr, $conn:ident => $body:expr) => {
        run!(@attempts false, $pool, $conn => $body)
    };
    (@attempts $repeatable:expr, $pool:expr, $conn:ident => $body:expr) => {{
        let pool: &$crate::pool::PgPool = &$pool;
        // When the first attempt's connection was found lost.
        let mut lost_at: Option<std::time::Instant> = None;
        loop {
            let conn = match lost_at {
                None => pool.get().await,
                Some(since) => pool.get_fresh(since).await,
            };
            let (result, may_retry) = match conn {
                Err(e) => (Err($crate::error::PgError::from(e)), false),
                Ok(mut checked_out) => match pool.pooler() {
                    None => {
                        let $conn: &mut diesel_async::AsyncPgConnection = &mut checked_out;
                        (async { $body }.await, $repeatable)
                    }
                    Some(_) => match $crate::session::begin(&mut checked_out, pool).await {
                        Err(e) => (Err($crate::error::PgError::from(e)), true),
                        Ok(()) => {
                            let result = {
                                let $conn: &mut diesel_async::AsyncPgConnection =
                                    &mut checked_out;
                                async { $body }.await
                            };
                            // A failed COMMIT's outcome is unknown: only a
                            // body that is safe to repeat goes again.
                            let may_retry = result.is_err() || $repeatable;
                            (
                                $crate::session::end(&mut checked_out, result).await,
                                may_retry,
                            )
                        }
                    },
                },
            };
            match result {
                Err(e) if lost_at.is_none() && may_retry && e.lost_connection() => {
                    $crate::session::note_retry(&e);
                    lost_at = Some(std::time::Instant::now());
                }
                done => break done,
            }
        }
    }};
    ($pool:expr, $conn:ident => $body:expr) => {
        run!(@attempts true, $pool, $conn => $body)
    };
}

/// `transaction!(pool, conn => body)`: `body` (an expression of
/// `Result<_, TxError>` that uses `conn: &mut AsyncPgConnection`) in one
/// transaction on a connection from `pool` (with the statement timeout
/// set through a pooler). Committed when `body` is `Ok`, rolled back when
/// not; `?` and `return` in `body` end `body`.
///
/// When the connection turns out to be lost before `COMMIT` was sent,
/// `body` runs once more, in a new transaction on a fresh connection: the
/// first transaction never committed, so nothing of it is left. A `COMMIT`
/// that fails is never repeated (its outcome is unknown).
macro_rules! transaction {
    ($pool:expr, $conn:ident => $body:expr) => {{
        let pool: &$crate::pool::PgPool = &$pool;
        let mut lost_at: Option<std::time::Instant> = None;
        loop {
            let conn = match lost_at {
                None => pool.get().await,
                Some(since) => pool.get_fresh(since).await,
            };
            let (result, before_commit) = match conn {
                Err(e) => (
                    Err($crate::error::TxError::Pg($crate::error::PgError::from(e))),
                    false,
                ),
                Ok(mut checked_out) => match $crate::session::begin(&mut checked_out, pool).await {
                    Err(e) => (Err($crate::error::TxError::Db(e)), true),
                    Ok(()) => {
                        let result: Result<_, $crate::error::TxError> = {
                            let $conn: &mut diesel_async::AsyncPgConnection = &mut checked_out;
                            async { $body }.await
                        };
                        let before_commit = result.is_err();
                        (
                            $crate::session::end(&mut checked_out, result).await,
                            before_commit,
                        )
                    }
                },
            };
            match result {
                Err(e) if lost_at.is_none() && before_commit && e.lost_connection() => {
                    $crate::session::note_retry(&e);
                    lost_at = Some(std::time::Instant::now());
                }
                done => break done,
            }
        }
    }};
}

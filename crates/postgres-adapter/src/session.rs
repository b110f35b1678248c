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
use diesel_async::{AsyncPgConnection, SimpleAsyncConnection as _};

/// The first statement of every transaction: `SET LOCAL
/// statement_timeout` through a pooler, nothing directly.
pub(crate) async fn set_local_timeout(
    conn: &mut AsyncPgConnection,
    pool: &PgPool,
) -> diesel::QueryResult<()> {
    match pool.pooler() {
        Some(timeout) => {
            conn.batch_execute(&format!(
                "SET LOCAL statement_timeout = {}",
                timeout.as_millis()
            ))
            .await
        }
        None => Ok(()),
    }
}

/// Through a pooler: `BEGIN` and `SET LOCAL statement_timeout` in one
/// exchange (one simple-protocol batch), with diesel's transaction manager
/// told a transaction is open.
pub(crate) async fn begin_pooled(
    conn: &mut AsyncPgConnection,
    timeout: std::time::Duration,
) -> diesel::QueryResult<()> {
    diesel_async::AnsiTransactionManager::begin_transaction_sql(
        conn,
        &format!(
            "BEGIN; SET LOCAL statement_timeout = {}",
            timeout.as_millis()
        ),
    )
    .await
}

/// Ends what [`begin_pooled`] began: `COMMIT` after `Ok`, `ROLLBACK` after
/// an error (whose error is the one returned).
pub(crate) async fn end_pooled<T>(
    conn: &mut AsyncPgConnection,
    result: Result<T, crate::error::PgError>,
) -> Result<T, crate::error::PgError> {
    use diesel_async::TransactionManager as _;
    match result {
        Ok(v) => {
            diesel_async::AnsiTransactionManager::commit_transaction(conn).await?;
            Ok(v)
        }
        Err(e) => {
            let _ = diesel_async::AnsiTransactionManager::rollback_transaction(conn).await;
            Err(e)
        }
    }
}

/// `run!(pool, conn => body)`: `body` (an expression of
/// `Result<_, PgError>` that uses `conn: &mut AsyncPgConnection`) on a
/// connection from `pool`; as it is directly, in a transaction through a
/// pooler. `?` in `body` ends `body`, in both cases.
macro_rules! run {
    ($pool:expr, $conn:ident => $body:expr) => {{
        let pool: &$crate::pool::PgPool = &$pool;
        match pool.get().await {
            Err(e) => Err($crate::error::PgError::from(e)),
            Ok(mut checked_out) => match pool.pooler() {
                None => {
                    let $conn: &mut diesel_async::AsyncPgConnection = &mut checked_out;
                    async { $body }.await
                }
                Some(timeout) => {
                    match $crate::session::begin_pooled(&mut checked_out, timeout).await {
                        Err(e) => Err($crate::error::PgError::from(e)),
                        Ok(()) => {
                            let result = {
                                let $conn: &mut diesel_async::AsyncPgConnection = &mut checked_out;
                                async { $body }.await
                            };
                            $crate::session::end_pooled(&mut checked_out, result).await
                        }
                    }
                }
            },
        }
    }};
}

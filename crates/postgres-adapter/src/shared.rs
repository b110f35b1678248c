//! Pipelined reads: a few connections shared by every concurrent reader.
//!
//! tokio-postgres pipelines queries issued concurrently on one connection:
//! many requests' reads go out in one write and come back in one read,
//! instead of a round trip (and a pool checkout) each. Only standalone reads
//! use them; anything in a transaction takes a pooled connection of its own.

use crate::error::PgError;
use crate::pool::PgSettings;
use diesel_async::{AsyncPgConnection, RunQueryDsl as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub(crate) struct SharedReads {
    settings: PgSettings,
    slots: Vec<tokio::sync::Mutex<Option<Arc<AsyncPgConnection>>>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for SharedReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedReads")
            .field("connections", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl SharedReads {
    pub(crate) fn new(settings: &PgSettings, connections: usize) -> Self {
        Self {
            settings: settings.clone(),
            slots: (0..connections.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A shared connection, opening it if needed.
    pub(crate) async fn get(&self) -> Result<(usize, Arc<AsyncPgConnection>), PgError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        self.get_at(i).await
    }

    /// Shared connection `i`, opening it if needed: after `discard(i)`, a
    /// fresh one (another slot's may be as dead as the one discarded).
    pub(crate) async fn get_at(
        &self,
        i: usize,
    ) -> Result<(usize, Arc<AsyncPgConnection>), PgError> {
        let mut slot = self.slots[i].lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok((i, c.clone()));
        }
        let connect = async {
            let target = crate::connect::parse_target(&self.settings.url)
                .map_err(diesel::ConnectionError::InvalidConnectionUrl)?;
            let mut conn = crate::connect::connect_patiently(
                &target,
                crate::connect::Through::Direct,
                self.settings.acquire_timeout,
            )
            .await?;
            diesel::sql_query(format!(
                "SET statement_timeout = {}",
                self.settings.statement_timeout.as_millis()
            ))
            .execute(&mut conn)
            .await
            .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok::<_, diesel::ConnectionError>(conn)
        };
        let conn = tokio::time::timeout(
            self.settings.acquire_timeout + Duration::from_secs(2),
            connect,
        )
        .await
        .map_err(|_| PgError::Unavailable(anyhow::anyhow!("timed out connecting to Postgres")))?
        .map_err(|e| {
            PgError::Unavailable(anyhow::Error::new(e).context("connecting to Postgres"))
        })?;
        let conn = Arc::new(conn);
        *slot = Some(conn.clone());
        Ok((i, conn))
    }

    /// Drops connection `i` after an error that may mean it is broken; the
    /// next reader opens a fresh one.
    pub(crate) async fn discard(&self, i: usize, conn: &Arc<AsyncPgConnection>) {
        let mut slot = self.slots[i].lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *slot = None;
        }
    }
}

/// `shared_read!(reads, conn => body)`: `body` (one read: an expression of
/// `QueryResult<_>` that uses `conn: &mut &AsyncPgConnection`) on
/// one of `reads`' shared connections, as a `Result<_, PgError>`. A
/// connection that turns out broken is dropped (the next reader opens a
/// fresh one); one that was lost (closed by the server while it sat idle,
/// say) is tried once more on a fresh connection: a read is safe to repeat.
macro_rules! shared_read {
    ($reads:expr, $conn:ident => $body:expr) => {{
        let reads: &$crate::shared::SharedReads = &$reads;
        // The slot whose connection was found lost: the retry opens it
        // afresh.
        let mut lost: Option<usize> = None;
        loop {
            let got = match lost {
                None => reads.get().await,
                Some(i) => reads.get_at(i).await,
            };
            let (i, shared) = match got {
                Ok(got) => got,
                Err(e) => break Err(e),
            };
            let result = {
                let $conn = &mut &*shared;
                async { $body }.await
            };
            match result {
                Err(e) if $crate::error::is_transient(&e) => {
                    reads.discard(i, &shared).await;
                    if lost.is_none() && $crate::session::lost_connection(&e) {
                        $crate::session::note_retry(&e);
                        lost = Some(i);
                        continue;
                    }
                    break Err($crate::error::PgError::from(e));
                }
                done => break done.map_err($crate::error::PgError::from),
            }
        }
    }};
}

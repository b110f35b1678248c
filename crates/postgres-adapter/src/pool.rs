//! The connection pool, database creation and migrations.

use anyhow::Context as _;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt as _;
use std::time::Duration;

/// The migrations in the workspace's top-level `migrations/`, compiled in.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

pub(crate) type PgConn = Object<AsyncPgConnection>;

/// A pool of Postgres connections, and how statements must run on them.
/// Cheap to clone.
#[derive(Clone)]
pub struct PgPool {
    inner: Pool<AsyncPgConnection>,
    /// `Some(statement timeout)` when the connections go through a
    /// transaction pooler: every statement then runs in a transaction that
    /// sets the timeout (see `session.rs`).
    pooler: Option<Duration>,
}

impl std::fmt::Debug for PgPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPool")
            .field("status", &self.inner.status())
            .field("through_pooler", &self.pooler.is_some())
            .finish()
    }
}

impl PgPool {
    /// A connection (waiting up to the acquire timeout).
    pub async fn get(
        &self,
    ) -> Result<PgConn, diesel_async::pooled_connection::deadpool::PoolError> {
        self.inner.get().await
    }

    /// A connection opened after `since`: after a lost connection, the
    /// others idle in the pool likely went the same way (a restart, a
    /// pooler's, a network cut), so the retry takes none of them. Idle
    /// connections older than `since` are closed as they come out.
    pub(crate) async fn get_fresh(
        &self,
        since: std::time::Instant,
    ) -> Result<PgConn, diesel_async::pooled_connection::deadpool::PoolError> {
        // Bounded: each round closes one old connection, and there are at
        // most `max_size` of them.
        for _ in 0..self.inner.status().max_size {
            let conn = self.inner.get().await?;
            if deadpool::managed::Object::metrics(&conn).created >= since {
                return Ok(conn);
            }
            drop(deadpool::managed::Object::take(conn));
        }
        self.inner.get().await
    }

    /// Closes the pool: no new connections; idle ones go.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Connections open now, and the most the pool opens.
    pub fn size(&self) -> (usize, usize) {
        let s = self.inner.status();
        (s.size, s.max_size)
    }

    /// The statement timeout to set per transaction, when the connections
    /// go through a transaction pooler.
    pub(crate) fn pooler(&self) -> Option<Duration> {
        self.pooler
    }
}

/// How to reach Postgres.
#[derive(Debug, Clone)]
pub struct PgSettings {
    pub url: String,
    pub max_connections: usize,
    /// How long to wait for a connection (from the pool or a new one) before
    /// giving up with `Unavailable`.
    pub acquire_timeout: Duration,
    /// Server-side limit for any one statement.
    pub statement_timeout: Duration,
    /// `url` is a transaction pooler (PgBouncer in transaction mode,
    /// Supavisor, a `-pooler` endpoint, RDS Proxy): a server connection is
    /// ours only for the length of a transaction, so no session state and
    /// no prepared statement outlives one.
    pub through_pooler: bool,
}

impl PgSettings {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(10),
            through_pooler: false,
        }
    }
}

/// Builds the pool. Connections are opened lazily: this succeeds even when
/// Postgres is down (readiness reports it, and requests get 503s).
pub fn build_pool(settings: &PgSettings) -> anyhow::Result<PgPool> {
    let statement_timeout_ms = settings.statement_timeout.as_millis();
    let pooler = settings.through_pooler;
    let mut config = ManagerConfig::default();
    // `Verified` runs an extra `SELECT 1` per checkout (~35% of a read
    // endpoint's throughput); a broken connection surfaces as an error on use
    // and is dropped by the pool either way.
    config.recycling_method = RecyclingMethod::Fast;
    let patience = settings.acquire_timeout;
    config.custom_setup = Box::new(move |url| {
        let url = url.to_owned();
        async move {
            let target = crate::connect::parse_target(&url)
                .map_err(diesel::ConnectionError::InvalidConnectionUrl)?;
            let through = if pooler {
                crate::connect::Through::Pooler
            } else {
                crate::connect::Through::Direct
            };
            let mut conn = crate::connect::connect_patiently(&target, through, patience).await?;
            if pooler {
                // Behind a transaction pooler a statement prepared in one
                // transaction may be gone (or another's) in the next: none
                // is kept; the timeout is set per transaction.
                conn.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
            } else {
                diesel::sql_query(format!("SET statement_timeout = {statement_timeout_ms}"))
                    .execute(&mut conn)
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            }
            Ok(conn)
        }
        .boxed()
    });
    let manager =
        AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(&settings.url, config);
    let inner = Pool::builder(manager)
        .max_size(settings.max_connections)
        .wait_timeout(Some(settings.acquire_timeout))
        // Connecting waits up to the acquire timeout for a server that is
        // not there yet, then says why; this bound is only a backstop.
        .create_timeout(Some(settings.acquire_timeout + Duration::from_secs(2)))
        .recycle_timeout(Some(settings.acquire_timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .context("building the Postgres pool")?;
    Ok(PgPool {
        inner,
        pooler: settings
            .through_pooler
            .then_some(settings.statement_timeout),
    })
}

/// Applies every pending migration. Returns the versions applied.
pub async fn run_migrations(url: &str) -> anyhow::Result<Vec<String>> {
    with_migration_connection(url, |conn| {
        conn.run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect())
            .map_err(|e| anyhow::anyhow!(e))
    })
    .await
}

/// Reverts every applied migration (for tests of `down.sql`). Returns the
/// versions reverted.
pub async fn revert_all_migrations(url: &str) -> anyhow::Result<Vec<String>> {
    with_migration_connection(url, |conn| {
        conn.revert_all_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect())
            .map_err(|e| anyhow::anyhow!(e))
    })
    .await
}

/// Reverts the newest applied migration (for upgrade tests: data written
/// under the schema before it). Returns its version.
pub async fn revert_last_migration(url: &str) -> anyhow::Result<String> {
    with_migration_connection(url, |conn| {
        conn.revert_last_migration(MIGRATIONS)
            .map(|version| version.to_string())
            .map_err(|e| anyhow::anyhow!(e))
    })
    .await
}

/// Runs sync diesel migration code on a blocking thread (the harness blocks;
/// it must not run on an async worker, and panics on a current-thread runtime).
pub(crate) async fn with_migration_connection<T, F>(url: &str, f: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut AsyncConnectionWrapper<AsyncPgConnection>) -> anyhow::Result<T> + Send + 'static,
{
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let conn = tokio::runtime::Handle::current()
            .block_on(crate::connect::connect(&url))
            .context("connecting to Postgres to migrate")?;
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
        f(&mut conn)
    })
    .await
    .context("the migration task panicked")?
}

/// Creates the database named in `url` if it does not exist (local
/// development convenience). Returns whether it created it.
pub async fn create_database_if_missing(url: &str) -> anyhow::Result<bool> {
    let parsed = url::Url::parse(url).context("DATABASE_URL is not a URL")?;
    let name = parsed.path().trim_start_matches('/').to_owned();
    anyhow::ensure!(!name.is_empty(), "DATABASE_URL names no database");
    // The server's message (SQLSTATE 3D000) is all the driver gives us;
    // match it with the database's own name, not any "does not exist".
    let missing = format!("database \"{name}\" does not exist");
    match crate::connect::connect(url).await {
        Ok(_) => return Ok(false),
        Err(e) if !e.to_string().contains(&missing) => {
            return Err(anyhow::Error::new(e).context("connecting to Postgres"));
        }
        Err(_) => {}
    }
    let mut admin_url = parsed.clone();
    admin_url.set_path("/postgres");
    let mut conn = crate::connect::connect(admin_url.as_str())
        .await
        .context("connecting to the `postgres` database to create ours")?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    match diesel::sql_query(format!("CREATE DATABASE {quoted}"))
        .execute(&mut conn)
        .await
    {
        Ok(_) => Ok(true),
        // Another process created it between our two connections.
        Err(e) if e.to_string().contains("already exists") => Ok(false),
        Err(e) => Err(anyhow::Error::new(e).context(format!("creating database {quoted}"))),
    }
}

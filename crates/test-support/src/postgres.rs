//! A Postgres schema of its own for each test.

use crate::{LEFTOVER_AGE_SECS, block_on_fresh_runtime, now_secs, unique_suffix};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tokio::sync::OnceCell;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/trellis_test";
const SCHEMA_PREFIX: &str = "test_";

static PREPARED: OnceCell<()> = OnceCell::const_new();

/// The database tests use: `TEST_DATABASE_URL`, or a local default.
pub(crate) fn base_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn unreachable(url: &str, e: impl std::fmt::Display) -> ! {
    panic!(
        "\n\nPostgres is not reachable at {url}: {e}\n\
         Tests need a real Postgres. Start it with `just services`, or:\n  \
         pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
         (or point TEST_DATABASE_URL at one).\n"
    )
}

fn with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

/// A schema of its own, migrated, dropped when this value is dropped.
/// Connect with [`url`](Self::url): its `search_path` points at the schema.
#[derive(Debug)]
pub struct TestDb {
    schema: String,
    url: String,
    base: String,
}

impl TestDb {
    /// A fresh schema with every migration applied.
    pub async fn new() -> Self {
        let db = Self::empty().await;
        // Through the adapter's own connection (TLS with the URL's
        // libpq parameters, as everywhere).
        postgres_adapter::run_migrations(&db.url)
            .await
            .unwrap_or_else(|e| panic!("migrating the test schema failed: {e:#}"));
        db
    }

    /// A fresh schema with nothing in it (for migration tests).
    pub async fn empty() -> Self {
        crate::init_tracing();
        let base = base_url();
        PREPARED.get_or_init(|| prepare(base.clone())).await;
        let schema = format!("{SCHEMA_PREFIX}{}_{}", now_secs(), unique_suffix());
        let mut conn = connect(&base).await;
        diesel::sql_query(format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("creating schema {schema}: {e}"));
        Self {
            url: with_search_path(&base, &schema),
            schema,
            base,
        }
    }

    /// A URL whose connections use this test's schema.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let base = self.base.clone();
        let schema = self.schema.clone();
        block_on_fresh_runtime(async move {
            if let Ok(mut conn) = postgres_adapter::connect(&base).await {
                let _ = diesel::sql_query(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .execute(&mut conn)
                    .await;
            }
        });
    }
}

async fn connect(url: &str) -> AsyncPgConnection {
    postgres_adapter::connect(url)
        .await
        .unwrap_or_else(|e| unreachable(url, e))
}

/// Whether `name` (`<prefix><birth time>_<suffix>`) was made by a run that
/// started more than [`LEFTOVER_AGE_SECS`] ago.
fn is_leftover(name: &str, prefix: &str) -> bool {
    let cutoff = now_secs().saturating_sub(LEFTOVER_AGE_SECS);
    name.strip_prefix(prefix)
        .and_then(|rest| rest.split('_').next())
        .and_then(|t| t.parse::<u64>().ok())
        .is_some_and(|born| born < cutoff)
}

/// Once per test process: create the test database if needed, and drop the
/// schemas that crashed runs left behind.
async fn prepare(base: String) {
    let parsed =
        url::Url::parse(&base).unwrap_or_else(|e| panic!("TEST_DATABASE_URL {base:?}: {e}"));
    let name = parsed.path().trim_start_matches('/').to_owned();
    if let Err(e) = postgres_adapter::connect(&base).await {
        if !e.to_string().contains("does not exist") {
            unreachable(&base, e);
        }
        let mut admin = parsed.clone();
        admin.set_path("/postgres");
        let mut conn = connect(admin.as_str()).await;
        // Another test binary may create it at the same moment: that is fine.
        let _ = diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await;
    }
    sweep_scratch_databases(&base).await;
    let mut conn = connect(&base).await;
    drop_leftovers(
        &mut conn,
        "SELECT nspname AS name FROM pg_namespace WHERE nspname LIKE $1",
        SCHEMA_PREFIX,
        |name| format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"),
    )
    .await;
}

#[derive(diesel::QueryableByName)]
struct Name {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

/// Drops what `list` (named `name`, filtered by `LIKE $1`) finds under
/// `prefix` that a crashed run left behind.
async fn drop_leftovers(
    conn: &mut AsyncPgConnection,
    list: &str,
    prefix: &str,
    drop: impl Fn(&str) -> String,
) {
    let names: Vec<Name> = diesel::sql_query(list)
        .bind::<diesel::sql_types::Text, _>(format!("{prefix}%"))
        .load(conn)
        .await
        .unwrap_or_default();
    for n in names {
        if is_leftover(&n.name, prefix) {
            let _ = diesel::sql_query(drop(&n.name)).execute(conn).await;
        }
    }
}

#[derive(diesel::QueryableByName)]
struct Scalar {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    value: i64,
}

impl TestDb {
    /// Runs `sql` (which must select one bigint column named `value`) in this
    /// test's schema, for assertions on what the code under test stored.
    pub async fn scalar(&self, sql: &str) -> i64 {
        let mut conn = connect(&self.url).await;
        diesel::sql_query(sql)
            .get_result::<Scalar>(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .value
    }

    /// Runs `sql` in this test's schema.
    pub async fn execute(&self, sql: &str) -> usize {
        let mut conn = connect(&self.url).await;
        diesel::sql_query(sql)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

const SCRATCH_PREFIX: &str = "trellis_scratch_";

/// A whole database that does not exist yet (for tests of database
/// creation and `app migrate`), dropped when this value is dropped.
#[derive(Debug)]
pub struct ScratchDatabase {
    name: String,
    url: String,
    admin: String,
}

impl ScratchDatabase {
    pub async fn new() -> Self {
        crate::init_tracing();
        let base = base_url();
        PREPARED.get_or_init(|| prepare(base.clone())).await;
        let name = format!("{SCRATCH_PREFIX}{}_{}", now_secs(), unique_suffix());
        let mut url =
            url::Url::parse(&base).unwrap_or_else(|e| panic!("TEST_DATABASE_URL {base:?}: {e}"));
        url.set_path(&format!("/{name}"));
        let mut admin = url.clone();
        admin.set_path("/postgres");
        Self {
            name,
            url: url.to_string(),
            admin: admin.to_string(),
        }
    }

    /// The database's URL (it exists once the code under test creates it).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the database exists now.
    pub async fn exists(&self) -> bool {
        self.database_exists(&self.name).await
    }

    /// Whether a database named `name` exists.
    pub async fn database_exists(&self, name: &str) -> bool {
        let mut conn = connect(&self.admin).await;
        diesel::sql_query(format!(
            "SELECT count(*) AS value FROM pg_database WHERE datname = '{}'",
            name.replace('\'', "''")
        ))
        .get_result::<Scalar>(&mut conn)
        .await
        .map(|r| r.value == 1)
        .unwrap_or(false)
    }

    /// Creates it (for tests of what happens when it already exists).
    pub async fn create(&self) {
        let mut conn = connect(&self.admin).await;
        diesel::sql_query(format!("CREATE DATABASE \"{}\"", self.name))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("creating {}: {e}", self.name));
    }

    /// Runs `sql` (one bigint column named `value`) in the database.
    pub async fn scalar(&self, sql: &str) -> i64 {
        let mut conn = connect(&self.url).await;
        diesel::sql_query(sql)
            .get_result::<Scalar>(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .value
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        block_on_fresh_runtime(async move {
            if let Ok(mut conn) = postgres_adapter::connect(&admin).await {
                let _ =
                    diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
            }
        });
    }
}

/// Drops scratch databases that crashed runs left behind (over an hour old).
async fn sweep_scratch_databases(base: &str) {
    let Ok(mut admin) = url::Url::parse(base) else {
        return;
    };
    admin.set_path("/postgres");
    let Ok(mut conn) = postgres_adapter::connect(admin.as_str()).await else {
        return;
    };
    drop_leftovers(
        &mut conn,
        "SELECT datname AS name FROM pg_database WHERE datname LIKE $1",
        SCRATCH_PREFIX,
        |name| format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
    )
    .await;
}

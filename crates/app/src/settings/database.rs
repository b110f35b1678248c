//! Postgres.

use super::reader::Reader;

pub(crate) const VARIABLES: &[&str] = &["DATABASE_URL", "DATABASE_MAX_CONNECTIONS"];

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/trellis";

#[derive(Clone)]
pub struct DatabaseSection {
    /// May hold a password: never printed.
    pub url: String,
    /// Connections per process (the API splits them among its workers).
    pub max_connections: usize,
}

/// The URL (it may hold a password) is never printed.
impl std::fmt::Debug for DatabaseSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSection")
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl DatabaseSection {
    pub(crate) fn read(r: &mut Reader<'_>) -> Self {
        let url = r.url(
            "DATABASE_URL",
            DEFAULT_DATABASE_URL,
            &["postgres", "postgresql"],
        );
        let max_connections =
            r.ranged("DATABASE_MAX_CONNECTIONS", 16_usize, 1, 1000, "connections");
        Self {
            url,
            max_connections,
        }
    }

    /// The pool of `max_connections`.
    pub fn pg_settings(&self) -> postgres_adapter::PgSettings {
        postgres_adapter::PgSettings {
            max_connections: self.max_connections,
            ..postgres_adapter::PgSettings::new(self.url.clone())
        }
    }
}

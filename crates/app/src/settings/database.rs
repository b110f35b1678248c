//! Postgres: where it is (directly, or through a transaction pooler with
//! the direct endpoint beside it), and how many connections a process may
//! open in all.

use super::reader::Reader;
use secrecy::{ExposeSecret as _, SecretString};

pub(crate) const VARIABLES: &[&str] = &[
    "DATABASE_URL",
    "DATABASE_DIRECT_URL",
    "DATABASE_MAX_CONNECTIONS",
];

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/trellis";

/// The URLs (which may hold a password) are `SecretString`s: their
/// `Debug` prints `[REDACTED]`.
#[derive(Clone, Debug)]
pub struct DatabaseSection {
    /// May hold a password: never printed.
    pub url: SecretString,
    /// The session endpoint beside a transaction pooler
    /// (`DATABASE_DIRECT_URL`, the convention of Prisma and Supabase): when
    /// set, `url` is taken to be the pooler, and what needs a session (the
    /// relay's leadership and LISTEN, migrations) connects here.
    pub direct_url: Option<SecretString>,
    /// The most Postgres connections this process opens, in all (every
    /// pool and the relay's own connections; see [`ConnectionBudget`]).
    pub max_connections: usize,
}

impl DatabaseSection {
    pub(crate) fn read(r: &mut Reader<'_>) -> Self {
        let schemes = ["postgres", "postgresql"];
        let url = r.url("DATABASE_URL", DEFAULT_DATABASE_URL, &schemes);
        let direct_url = r
            .raw("DATABASE_DIRECT_URL")
            .map(|_| r.url("DATABASE_DIRECT_URL", "", &schemes));
        for (var, value) in [
            ("DATABASE_URL", Some(&url)),
            ("DATABASE_DIRECT_URL", direct_url.as_ref()),
        ] {
            // One problem per variable: a URL that is not one is reported
            // already.
            let reported = r.problems.iter().any(|(v, _)| v == var);
            if reported {
                continue;
            }
            if let Some(Err(e)) = value.map(|v| postgres_adapter::parse_target(v)) {
                r.problem(var, e);
            }
        }
        let max_connections = r.ranged(
            "DATABASE_MAX_CONNECTIONS",
            16_usize,
            2,
            10_000,
            "connections",
        );
        Self {
            url: url.into(),
            direct_url: direct_url.map(SecretString::from),
            max_connections,
        }
    }

    /// Whether `url` is a transaction pooler (a direct URL is beside it).
    pub fn through_pooler(&self) -> bool {
        self.direct_url.is_some()
    }

    /// Where sessions go: the relay's leadership and LISTEN, migrations,
    /// database creation.
    pub fn session_url(&self) -> &str {
        self.direct_url
            .as_ref()
            .unwrap_or(&self.url)
            .expose_secret()
    }

    /// A pool of `max_connections` connections to `url`.
    pub fn pool_settings(&self, max_connections: usize) -> postgres_adapter::PgSettings {
        postgres_adapter::PgSettings {
            max_connections: max_connections.max(1),
            through_pooler: self.through_pooler(),
            ..postgres_adapter::PgSettings::new(self.url.expose_secret().to_owned())
        }
    }

    /// The pool of the whole budget (for one-off commands).
    pub fn pg_settings(&self) -> postgres_adapter::PgSettings {
        self.pool_settings(self.max_connections)
    }
}

/// How one process splits `DATABASE_MAX_CONNECTIONS` among what opens
/// Postgres connections: the relay's two sessions (leadership, LISTEN) in
/// the worker role; one pipelined read connection per HTTP worker thread
/// (not through a pooler); each HTTP worker thread's own pool; the pool the
/// rest of the process shares (background work, readiness, the console).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionBudget {
    /// The shared pool's size.
    pub shared: usize,
    /// Each HTTP worker thread's pool.
    pub per_http_worker: usize,
    /// Each HTTP worker thread's pipelined read connections.
    pub reads_per_http_worker: usize,
    /// The relay's own sessions.
    pub relay: usize,
}

impl ConnectionBudget {
    /// The split of `total` for a process that serves HTTP on
    /// `http_workers` threads (0: it does not) and runs the worker role or
    /// not.
    pub fn split(
        total: usize,
        http_workers: usize,
        works: bool,
        through_pooler: bool,
    ) -> Result<Self, String> {
        let relay = if works { 2 } else { 0 };
        let reads = usize::from(http_workers > 0 && !through_pooler);
        // At least: the relay, a read connection and one pooled connection
        // per HTTP worker, one shared.
        let least = relay + http_workers * (1 + reads) + 1;
        if total < least {
            return Err(format!(
                "DATABASE_MAX_CONNECTIONS={total} is too few for this process: it needs at least {least} ({} HTTP worker threads, {})",
                http_workers,
                if works {
                    "the worker role"
                } else {
                    "no worker role"
                }
            ));
        }
        let left = total - relay - http_workers * reads;
        let (shared, per_http_worker) = match (http_workers, works) {
            (0, _) => (left, 0),
            // Background work gets a third, the API the rest.
            (n, true) => {
                // (`least` leaves at least one per HTTP worker.)
                let shared = (left / 3).clamp(1, left - n);
                (shared, ((left - shared) / n).max(1))
            }
            // The shared pool serves readiness and the console only.
            (n, false) => {
                let shared = 2.min(left - n).max(1);
                (shared, ((left - shared) / n).max(1))
            }
        };
        Ok(Self {
            shared,
            per_http_worker,
            reads_per_http_worker: reads,
            relay,
        })
    }

    /// The connections this split opens at most.
    pub fn total(&self, http_workers: usize) -> usize {
        self.shared
            + http_workers * (self.per_http_worker + self.reads_per_http_worker)
            + self.relay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_never_opens_more_than_the_budget() {
        for total in 2..200 {
            for workers in [0, 1, 2, 4, 8, 16] {
                for works in [false, true] {
                    for pooler in [false, true] {
                        if workers == 0 && !works {
                            continue;
                        }
                        match ConnectionBudget::split(total, workers, works, pooler) {
                            Ok(b) => {
                                assert!(
                                    b.total(workers) <= total,
                                    "{total} {workers} {works}: {b:?}"
                                );
                                assert!(b.shared >= 1);
                                assert!(workers == 0 || b.per_http_worker >= 1);
                                assert_eq!(b.relay, if works { 2 } else { 0 });
                                assert_eq!(
                                    b.reads_per_http_worker,
                                    usize::from(workers > 0 && !pooler)
                                );
                            }
                            Err(e) => assert!(e.contains("too few"), "{e}"),
                        }
                    }
                }
            }
        }
        let b = ConnectionBudget::split(16, 2, true, false).unwrap();
        assert_eq!(b.total(2), 16, "the budget is used: {b:?}");
    }
}

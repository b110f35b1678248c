//! PgBouncer (Debian's, 1.18) in transaction mode in front of the machine's
//! Postgres: a server connection is a client's for one transaction only,
//! and prepared statements do not survive it. What Supavisor's port 6543,
//! Neon's `-pooler` host and RDS Proxy put between an app and Postgres.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `pgbouncer` process of the test's own; stopped on drop.
#[derive(Debug)]
pub struct PgBouncer {
    port: u16,
    child: Option<Child>,
    dir: PathBuf,
    upstream: (String, u16),
    pool_size: usize,
}

fn binary() -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = PathBuf::from(dir).join("pgbouncer");
        if p.exists() {
            return p;
        }
    }
    panic!("pgbouncer is not installed: `scripts/dev test` installs it (Debian's pgbouncer)")
}

impl PgBouncer {
    /// In front of `host:port` (trust authentication there), with
    /// `pool_size` server connections per database and user.
    pub fn start(host: &str, port: u16, pool_size: usize) -> Self {
        let dir =
            std::env::temp_dir().join(format!("trellis-pgbouncer-{}", crate::unique_suffix()));
        std::fs::create_dir_all(&dir).expect("pgbouncer's directory");
        let mut b = Self {
            port: crate::free_port(),
            child: None,
            dir,
            upstream: (host.to_owned(), port),
            pool_size,
        };
        b.resume();
        b
    }

    /// In front of the machine's Postgres (`TEST_DATABASE_URL`'s host).
    pub fn in_front_of_the_local_postgres(pool_size: usize) -> Self {
        let base = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let url = url::Url::parse(&base).expect("TEST_DATABASE_URL");
        Self::start(
            url.host_str().unwrap_or("127.0.0.1"),
            url.port().unwrap_or(5432),
            pool_size,
        )
    }

    /// Starts it again (after [`PgBouncer::stop`]) on the same port.
    pub fn resume(&mut self) {
        let ini = self.dir.join("pgbouncer.ini");
        let (host, upstream_port) = &self.upstream;
        std::fs::write(
            &ini,
            format!(
                "[databases]\n* = host={host} port={upstream_port} user=postgres\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = any\npool_mode = transaction\n\
                 default_pool_size = {pool}\nmax_client_conn = 500\n\
                 ignore_startup_parameters = extra_float_digits,options\n\
                 server_reset_query =\nlogfile = {dir}/pgbouncer.log\n\
                 pidfile = {dir}/pgbouncer.pid\nadmin_users = postgres\n",
                port = self.port,
                pool = self.pool_size,
                dir = self.dir.display(),
            ),
        )
        .expect("pgbouncer.ini");
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&self.dir)
            .status();
        // PgBouncer refuses to run as root.
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let mut cmd = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(binary());
            c
        } else {
            Command::new(binary())
        };
        let stderr = std::fs::File::create(self.dir.join("stderr.log"))
            .map_or_else(|_| Stdio::null(), Stdio::from);
        let child = cmd
            .arg(&ini)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starting pgbouncer");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not come up: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it (every client connection drops).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // runuser's child is pgbouncer itself: make sure it is gone.
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pgbouncer.pid")) {
            let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        }
        // A killed pgbouncer leaves its pidfile, which a new one refuses.
        let _ = std::fs::remove_file(self.dir.join("pgbouncer.pid"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `url` (a database on the machine's Postgres) through this pooler.
    pub fn url_for(&self, url: &str) -> String {
        let mut u = url::Url::parse(url).expect("a database URL");
        let _ = u.set_host(Some("127.0.0.1"));
        let _ = u.set_port(Some(self.port));
        u.to_string()
    }

    /// What it logged (for failures).
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default();
        let stderr = std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
        format!("{log}{stderr}")
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A migrated database of the test's own on the machine's Postgres, with
/// PgBouncer in transaction mode in front of it: `url()` is the pooler,
/// `direct_url()` the database itself (what `DATABASE_URL` and
/// `DATABASE_DIRECT_URL` name on Supabase or Neon).
#[derive(Debug)]
pub struct PooledDatabase {
    // The pooler goes before the database it holds connections to.
    bouncer: PgBouncer,
    db: crate::ScratchDatabase,
    url: String,
}

impl PooledDatabase {
    /// With `pool_size` server connections for the database.
    pub async fn new(pool_size: usize) -> Self {
        let db = crate::ScratchDatabase::new().await;
        postgres_adapter::create_database_if_missing(db.url())
            .await
            .expect("creating the scratch database");
        postgres_adapter::run_migrations(db.url())
            .await
            .expect("migrating the scratch database");
        let bouncer = PgBouncer::in_front_of_the_local_postgres(pool_size);
        let url = bouncer.url_for(db.url());
        Self { bouncer, db, url }
    }

    /// Through the pooler.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Straight to Postgres.
    pub fn direct_url(&self) -> &str {
        self.db.url()
    }

    pub fn bouncer(&mut self) -> &mut PgBouncer {
        &mut self.bouncer
    }
}

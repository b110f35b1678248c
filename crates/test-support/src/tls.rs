//! Servers that speak only TLS, on loopback, with certificates from a CA
//! the test makes: a Postgres cluster of its own (`hostssl` only) and a
//! `redis-server --tls-port`. For the field's setups: managed databases
//! that refuse plaintext, and `rediss://`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A certificate authority made for one test, and the files of what it
/// issued (in a directory removed on drop).
pub struct TestCa {
    dir: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").field("dir", &self.dir).finish()
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("trellis-ca-{}", crate::unique_suffix()));
        std::fs::create_dir_all(&dir).expect("a directory for the test CA");
        let key = rcgen::KeyPair::generate().expect("a CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("Trellis test CA {name}"));
        let cert = params.self_signed(&key).expect("the CA certificate");
        let ca_pem = cert.pem();
        std::fs::write(dir.join("ca.pem"), &ca_pem).expect("writing the CA");
        Self {
            dir,
            issuer: rcgen::Issuer::new(params, key),
            ca_pem,
        }
    }

    /// The CA's certificate (PEM file).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A certificate for `names` (DNS names or IP addresses), valid now
    /// (`expired`: it ended yesterday), written as `<file>.pem` and
    /// `<file>.key`.
    pub fn issue(&self, file: &str, names: &[&str], expired: bool) -> Issued {
        let key = rcgen::KeyPair::generate().expect("a key");
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .expect("certificate params");
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().copied().unwrap_or(file),
        );
        if expired {
            let now = rcgen::date_time_ymd(2020, 1, 1);
            params.not_before = now;
            params.not_after = rcgen::date_time_ymd(2020, 6, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).expect("signing");
        let issued = Issued {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).expect("writing a certificate");
        std::fs::write(&issued.key, key.serialize_pem()).expect("writing a key");
        issued
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what} did not come up in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The directory of the machine's Postgres binaries (`initdb`, `pg_ctl`).
fn pg_bin() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("{} not found ({e}): install postgresql", root.display()))
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no initdb under /usr/lib/postgresql")
}

/// Runs `cmd` as the `postgres` user when this process is root (initdb
/// refuses root), as is otherwise.
fn as_postgres(bin: &Path, args: &[&str]) -> Command {
    let root = std::env::var("USER").is_ok_and(|u| u == "root")
        || Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin).args(args);
        c
    } else {
        let mut c = Command::new(bin);
        c.args(args);
        c
    }
}

/// A Postgres cluster of the test's own that accepts only TLS (`hostssl`
/// in its `pg_hba.conf`), with a server certificate from `ca` for
/// `localhost` only: `verify-full` to `localhost` passes, to `127.0.0.1`
/// it fails on the name. Stopped and removed on drop.
#[derive(Debug)]
pub struct TlsPostgres {
    dir: PathBuf,
    port: u16,
}

impl TlsPostgres {
    pub fn start(ca: &TestCa, server_names: &[&str], expired: bool) -> Self {
        Self::start_with(ca, server_names, expired, true)
    }

    /// A cluster without TLS at all (`ssl = off`), taking plaintext.
    pub fn without_tls(ca: &TestCa) -> Self {
        Self::start_with(ca, &["localhost"], false, false)
    }

    fn start_with(ca: &TestCa, server_names: &[&str], expired: bool, tls: bool) -> Self {
        let bin = pg_bin();
        let dir = std::env::temp_dir().join(format!("trellis-pg-tls-{}", crate::unique_suffix()));
        std::fs::create_dir_all(&dir).expect("the cluster's directory");
        let data = dir.join("data");
        let issued = ca.issue("pg-server", server_names, expired);
        let port = crate::free_port();
        // The postgres user owns the whole directory (data, keys, socket).
        std::fs::copy(&issued.cert, dir.join("server.crt")).expect("the server certificate");
        std::fs::copy(&issued.key, dir.join("server.key")).expect("the server key");
        std::fs::copy(ca.ca_file(), dir.join("ca.crt")).expect("the CA");
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status();
        assert!(
            chown.is_ok_and(|s| s.success()) || !std::path::Path::new("/root").exists(),
            "cannot hand {} to the postgres user",
            dir.display()
        );
        let key_mode = Command::new("chmod")
            .arg("600")
            .arg(dir.join("server.key"))
            .status();
        assert!(key_mode.is_ok_and(|s| s.success()));
        let init = as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("running initdb");
        assert!(
            init.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{dir}'\n\
             ssl = {ssl}\nssl_cert_file = '{dir}/server.crt'\nssl_key_file = '{dir}/server.key'\n\
             ssl_ca_file = '{dir}/ca.crt'\nfsync = off\nmax_connections = 50\n",
            dir = dir.display(),
            ssl = if tls { "on" } else { "off" },
        );
        append(&data.join("postgresql.conf"), &conf);
        // TLS or nothing (or, without TLS, plaintext).
        let hba = if tls {
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n"
        } else {
            "local all all trust\nhost all all 127.0.0.1/32 trust\n"
        };
        std::fs::write(data.join("pg_hba.conf"), hba).expect("pg_hba.conf");
        let log = dir.join("postgres.log");
        let start = as_postgres(
            &bin.join("pg_ctl"),
            &[
                "-D",
                &data.display().to_string(),
                "-l",
                &log.display().to_string(),
                "-w",
                "-t",
                "30",
                "start",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("running pg_ctl");
        assert!(
            start.status.success(),
            "the TLS-only Postgres did not start: {} {}",
            String::from_utf8_lossy(&start.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Self { dir, port }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL to this cluster's `postgres` database on `host`, with `query`.
    pub fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = as_postgres(
            &pg_bin().join("pg_ctl"),
            &["-D", &data.display().to_string(), "-m", "immediate", "stop"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("postgresql.conf");
    f.write_all(text.as_bytes())
        .expect("writing postgresql.conf");
}

/// A `redis-server` that speaks only TLS (`--port 0 --tls-port N`), with a
/// certificate from `ca` for 127.0.0.1 and localhost; asking clients for a
/// certificate from `ca` when `client_certs` is set.
#[derive(Debug)]
pub struct TlsRedis {
    port: u16,
    child: Child,
}

impl TlsRedis {
    pub fn start(ca: &TestCa, client_certs: bool) -> Self {
        let issued = ca.issue("redis-server", &["127.0.0.1", "localhost"], false);
        let port = crate::free_port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&issued.cert)
            .arg("--tls-key-file")
            .arg(&issued.key)
            .arg("--tls-ca-cert-file")
            .arg(ca.ca_file())
            .args([
                "--tls-auth-clients",
                if client_certs { "yes" } else { "no" },
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (with TLS) is installed");
        wait_until("the TLS redis-server", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self { port, child }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rediss://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! What `app doctor` asks of a Postgres endpoint: the TLS handshake as the
//! URL's `sslmode` makes it (version, what the certificate was verified
//! against, the certificate), the server's version and port, and which
//! migrations are still to apply.

use crate::connect::{PgTarget, Roots, SslMode, client_config, explain, parse_target};
use diesel::QueryableByName;
use diesel::sql_types::{Integer, Nullable, Text};
use diesel_async::{AsyncConnection as _, RunQueryDsl as _};
use diesel_migrations::MigrationHarness as _;
use ports::TlsHandshake;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A Postgres endpoint as `app doctor` found it.
#[derive(Debug)]
pub struct PgInspection {
    /// `Ok(None)`: no TLS (`sslmode=disable`, or a server without it under
    /// `prefer` or `allow`).
    pub tls: Result<Option<TlsHandshake>, String>,
    /// A connection with the URL's settings, and what it said.
    pub server: Result<PgServer, String>,
}

/// What the server says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgServer {
    /// `server_version`.
    pub version: String,
    /// The port the server itself listens on (`inet_server_port()`): a
    /// different port from the URL's means something (a pooler, a proxy)
    /// is in between.
    pub port: Option<u16>,
    /// The URL's port.
    pub url_port: u16,
}

#[derive(QueryableByName)]
struct ServerRow {
    #[diesel(sql_type = Text)]
    version: String,
    #[diesel(sql_type = Nullable<Integer>)]
    port: Option<i32>,
}

/// Looks at `url` (each step within `timeout`). Never echoes the URL.
pub async fn inspect(url: &str, timeout: Duration) -> PgInspection {
    let target = match parse_target(url) {
        Ok(t) => t,
        Err(e) => {
            return PgInspection {
                tls: Err(e.clone()),
                server: Err(e),
            };
        }
    };
    let within = |what: &'static str| move |_| format!("no answer within {timeout:?} ({what})");
    let tls = tokio::time::timeout(timeout, handshake(&target))
        .await
        .map_err(within("TLS handshake"))
        .and_then(|r| r);
    let server = tokio::time::timeout(timeout, server(url, &target))
        .await
        .map_err(within("connecting"))
        .and_then(|r| r);
    PgInspection { tls, server }
}

async fn server(url: &str, target: &PgTarget) -> Result<PgServer, String> {
    // In one transaction, as through a transaction pooler (works directly
    // too): the question is what is there, not whether it is one.
    let mut conn = crate::connect::connect_pooled(url)
        .await
        .map_err(|e| e.to_string())?;
    let row: ServerRow = conn
        .transaction::<_, diesel::result::Error, _>(async |c| {
            diesel::sql_query(
                "SELECT current_setting('server_version') AS version, inet_server_port() AS port",
            )
            .get_result(c)
            .await
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(PgServer {
        version: row.version,
        port: row.port.and_then(|p| u16::try_from(p).ok()),
        url_port: host_port(target).map_or(5432, |(_, p)| p),
    })
}

fn host_port(target: &PgTarget) -> Result<(String, u16), String> {
    let config: tokio_postgres::Config = target.url.parse().map_err(|e| format!("{e}"))?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => return Err("not a TCP host".to_owned()),
    };
    Ok((host, config.get_ports().first().copied().unwrap_or(5432)))
}

/// Postgres' SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

async fn handshake(target: &PgTarget) -> Result<Option<TlsHandshake>, String> {
    let tls = &target.tls;
    if tls.mode == SslMode::Disable {
        return Ok(None);
    }
    let (host, port) = host_port(target)?;
    let mut tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    tcp.write_all(&SSL_REQUEST)
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = [0_u8];
    tcp.read_exact(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    if answer[0] != b'S' {
        return match tls.mode {
            SslMode::Allow | SslMode::Prefer => Ok(None),
            _ => Err(explain("server does not support TLS")),
        };
    }
    let config = client_config(tls)?;
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| format!("{host}: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| explain(&e.to_string()))?;
    let (_, session) = stream.get_ref();
    Ok(Some(TlsHandshake {
        protocol: match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
            other => format!("{other:?}"),
        },
        verified_against: tls.verifies().map(|roots| match roots {
            Roots::File(path) => path.display().to_string(),
            Roots::System => "the system's roots".to_owned(),
        }),
        peer_certificate: session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c| c.as_ref().to_vec()),
    }))
}

/// The embedded migrations `url`'s database has not applied yet (their
/// versions), and how many it has.
pub async fn pending_migrations(url: &str) -> anyhow::Result<(Vec<String>, usize)> {
    crate::pool::with_migration_connection(url, |conn| {
        let pending = conn
            .pending_migrations(crate::MIGRATIONS)
            .map_err(|e| anyhow::anyhow!(e))?
            .iter()
            .map(|m| m.name().version().to_string())
            .collect();
        let applied = conn
            .applied_migrations()
            .map_err(|e| anyhow::anyhow!(e))?
            .len();
        Ok((pending, applied))
    })
    .await
}

//! What `app doctor` (and the startup check) asks of Redis: the TLS
//! handshake of a `rediss://` URL, the server's version and mode, its
//! persistence and its eviction policy.

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use ports::TlsHandshake;
use std::sync::Arc;
use std::time::Duration;

/// Redis as `app doctor` found it.
#[derive(Debug)]
pub struct RedisInspection {
    /// `None` for `redis://`.
    pub tls: Option<Result<TlsHandshake, String>>,
    pub server: Result<RedisServer, String>,
}

/// What `INFO` (and `CONFIG GET save`, where allowed) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisServer {
    pub version: String,
    /// `standalone`, `cluster` or `sentinel, primary with N replica(s)`.
    pub mode: String,
    /// Replicas connected to this server (`connected_slaves`).
    pub replicas: u32,
    /// Whether the append-only file is on.
    pub aof: bool,
    /// `CONFIG GET save` (`""`: no snapshots); `None` where `CONFIG` is
    /// refused (most managed offerings).
    pub rdb_save: Option<String>,
    /// `maxmemory-policy`: anything but `noeviction` lets Redis drop queued
    /// jobs and stream entries when memory runs out.
    pub maxmemory_policy: String,
}

impl RedisServer {
    /// Whether Redis may evict keys (jobs, stream entries) under memory
    /// pressure.
    pub fn evicts(&self) -> bool {
        self.maxmemory_policy != "noeviction"
    }
}

/// Looks at `url` (each step within `timeout`). Never echoes the URL.
pub async fn inspect(url: &str, tls: &ports::TlsMaterial, timeout: Duration) -> RedisInspection {
    let secure = url.starts_with("rediss");
    let handshake = if secure {
        Some(
            tokio::time::timeout(timeout, handshake(url, tls))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {timeout:?} (TLS handshake)"))),
        )
    } else {
        None
    };
    let server = async {
        let client = crate::client::build(url, tls, false).map_err(|e| format!("{e:#}"))?;
        client.connect();
        let connected = match tokio::time::timeout(timeout, client.wait_for_connect()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(explain(&e.to_string())),
            Err(_) => Err(format!("not connected within {timeout:?}")),
        };
        let info = match connected {
            Ok(()) => tokio::time::timeout(timeout, server(&client))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}"))),
            Err(e) => Err(e),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), client.quit()).await;
        // Through a Sentinel the client reached the primary it names.
        info.map(|mut s| {
            if url.contains("-sentinel://") {
                s.mode = format!("sentinel, primary with {} replica(s)", s.replicas);
            }
            s
        })
    };
    RedisInspection {
        tls: handshake,
        server: server.await,
    }
}

fn command(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, ClusterHash::Random, false)
}

/// `INFO` and `CONFIG GET save` through `client`.
pub async fn server(client: &Client) -> Result<RedisServer, String> {
    let info: String = client
        .custom(command("INFO"), Vec::<String>::new())
        .await
        .map_err(|e| e.to_string())?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    };
    let rdb_save = client
        .custom::<Vec<String>, _>(command("CONFIG"), vec!["GET", "save"])
        .await
        .ok()
        .and_then(|pair| pair.get(1).cloned());
    Ok(RedisServer {
        version: field("redis_version").unwrap_or_else(|| "unknown".to_owned()),
        mode: field("redis_mode").unwrap_or_else(|| "standalone".to_owned()),
        replicas: field("connected_slaves")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        aof: field("aof_enabled").as_deref() == Some("1"),
        rdb_save,
        maxmemory_policy: field("maxmemory_policy").unwrap_or_else(|| "unknown".to_owned()),
    })
}

/// The host and port of `url`'s (first) node.
fn host_port(url: &str) -> Result<(String, u16), String> {
    let parsed = url::Url::parse(url).map_err(|_| "REDIS_URL is not a URL".to_owned())?;
    let host = parsed
        .host_str()
        .ok_or("REDIS_URL names no host")?
        .trim_matches(['[', ']'])
        .to_owned();
    Ok((host, parsed.port().unwrap_or(6379)))
}

async fn handshake(url: &str, tls: &ports::TlsMaterial) -> Result<TlsHandshake, String> {
    let (host, port) = host_port(url)?;
    let config = crate::rustls_config(tls).map_err(|e| format!("{e:#}"))?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| format!("{host}: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| explain(&e.to_string()))?;
    let (_, session) = stream.get_ref();
    Ok(TlsHandshake {
        protocol: match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
            other => format!("{other:?}"),
        },
        verified_against: Some(if tls.ca_pem.is_some() {
            "the system's roots and REDIS_TLS_CA_FILE".to_owned()
        } else {
            "the system's roots".to_owned()
        }),
        peer_certificate: session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c| c.as_ref().to_vec()),
    })
}

/// Why a TLS handshake failed, in words an operator can act on.
fn explain(error: &str) -> String {
    let reason = if error.contains("UnknownIssuer") || error.contains("unknown issuer") {
        "the server's certificate is not signed by a trusted CA (set REDIS_TLS_CA_FILE)"
    } else if error.contains("NotValidForName") || error.contains("not valid for name") {
        "the server's certificate does not name this host"
    } else if error.contains("Expired") || error.contains("expired") {
        "the server's certificate has expired"
    } else if error.contains("CertificateRequired") || error.contains("certificate required") {
        "the server requires a client certificate (REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE)"
    } else if error.contains("InvalidContentType") || error.contains("corrupt message") {
        "the server does not speak TLS on this port (use redis://)"
    } else {
        return error.to_owned();
    };
    format!("{reason}: {error}")
}

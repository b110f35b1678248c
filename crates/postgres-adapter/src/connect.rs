//! Every connection to Postgres: TLS with libpq's URL parameters and their
//! meanings, through tokio-postgres-rustls.
//!
//! `sslmode`: `disable` (never TLS), `allow` (plaintext, TLS if the server
//! insists), `prefer` (the default: TLS when the server offers it,
//! unverified, else plaintext), `require` (TLS, unverified; verified
//! against `sslrootcert` when one is given, as libpq does), `verify-ca`
//! (the chain against the roots), `verify-full` (the chain and the host
//! name). `sslrootcert`: a PEM file, or `system` for the operating
//! system's roots (libpq 16); without it, the verifying modes use
//! `~/.postgresql/root.crt` when it exists, else the system's roots.
//! `sslcert` and `sslkey`: a client certificate (PEM) and its key. These
//! parameters are taken out of the URL before tokio-postgres reads the
//! rest (it knows only `disable`, `prefer` and `require`).
//!
//! A TLS failure says what failed (an unknown issuer, a name mismatch, an
//! expired certificate, a server without TLS) in the connection error.
//!
//! Longer than 450 lines: every libpq TLS parameter (`sslmode`,
//! `sslrootcert`, `sslcert`, `sslkey`) with its meaning and its rustls
//! configuration, kept in one place so they cannot disagree; tests beside it.

use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::path::PathBuf;
use std::sync::Arc;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode={other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// Where the roots that verify the server come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// `sslrootcert=<file>`.
    File(PathBuf),
    /// `sslrootcert=system`, or no `sslrootcert` and no
    /// `~/.postgresql/root.crt`.
    System,
}

/// A URL's TLS settings, in libpq's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTls {
    pub mode: SslMode,
    pub roots: Roots,
    /// Whether `sslrootcert` was given (with `require`, it means verify-ca).
    pub root_given: bool,
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl PgTls {
    /// Whether the server's certificate is verified (and against what).
    pub fn verifies(&self) -> Option<&Roots> {
        match self.mode {
            SslMode::VerifyCa | SslMode::VerifyFull => Some(&self.roots),
            SslMode::Require if self.root_given => Some(&self.roots),
            _ => None,
        }
    }
}

/// A URL split in what tokio-postgres reads and the TLS settings.
#[derive(Debug, Clone)]
pub struct PgTarget {
    /// The URL without the TLS parameters.
    pub url: String,
    pub tls: PgTls,
}

/// The libpq parameters taken out of the URL.
const TLS_PARAMS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Splits `url`'s TLS parameters from the rest. Errors name the parameter,
/// never the URL (it may hold a password).
pub fn parse_target(url: &str) -> Result<PgTarget, String> {
    let mut parsed = url::Url::parse(url).map_err(|_| "is not a postgres:// URL".to_owned())?;
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mode = get("sslmode")
        .map(|m| SslMode::parse(&m))
        .transpose()?
        .unwrap_or(SslMode::Prefer);
    let root_param = get("sslrootcert");
    let roots = match root_param.as_deref() {
        Some("system") => Roots::System,
        Some(path) => Roots::File(PathBuf::from(path)),
        None => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".postgresql/root.crt"))
            .filter(|p| p.exists())
            .map_or(Roots::System, Roots::File),
    };
    let client_cert = match (get("sslcert"), get("sslkey")) {
        (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
        (None, None) => None,
        _ => return Err("sslcert and sslkey go together".to_owned()),
    };
    // The other parameters exactly as written (re-encoding them would turn
    // a `%20` into a `+`, which tokio-postgres does not read as a space).
    let rest: Vec<String> = parsed
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(k, _)| k);
            !pair.is_empty() && !TLS_PARAMS.contains(&name)
        })
        .map(str::to_owned)
        .collect();
    parsed.set_query((!rest.is_empty()).then(|| rest.join("&")).as_deref());
    Ok(PgTarget {
        url: parsed.to_string(),
        tls: PgTls {
            mode,
            root_given: root_param.is_some(),
            roots,
            client_cert,
        },
    })
}

fn read_pem_certs(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject as _;
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// The root store `roots` name.
pub fn root_store(roots: &Roots) -> Result<rustls::RootCertStore, String> {
    let mut store = rustls::RootCertStore::empty();
    match roots {
        Roots::File(path) => {
            for cert in read_pem_certs(path)? {
                store
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = store.add(cert);
            }
            if store.is_empty() {
                return Err("no system root certificates found (set sslrootcert)".to_owned());
            }
        }
    }
    Ok(store)
}

/// Accepts any certificate: `prefer` and `require` encrypt without
/// verifying, as libpq does. The handshake's signatures are still checked.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a root; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        // The chain is checked before the name: a name error means the
        // chain was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// The rustls client configuration `tls` asks for.
pub fn client_config(tls: &PgTls) -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match (tls.mode, tls.verifies()) {
        (SslMode::VerifyFull, Some(roots)) => builder.with_root_certificates(root_store(roots)?),
        (_, Some(roots)) => {
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(root_store(roots)?),
                provider,
            )
            .build()
            .map_err(|e| e.to_string())?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(verifier)))
        }
        (_, None) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider))),
    };
    match &tls.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            use rustls::pki_types::pem::PemObject as _;
            let chain = read_pem_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("sslkey {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("sslcert/sslkey: {e}"))
        }
    }
}

/// Why a TLS connection failed, in words an operator can act on.
pub fn explain(error: &str) -> String {
    let reason = if error.contains("UnknownIssuer") || error.contains("unknown issuer") {
        "the server's certificate is not signed by a trusted CA (check sslrootcert)"
    } else if error.contains("NotValidForName") || error.contains("not valid for name") {
        "the server's certificate does not name this host (verify-full checks the host name)"
    } else if error.contains("Expired") || error.contains("certificate expired") {
        "the server's certificate has expired"
    } else if error.contains("NotValidYet") {
        "the server's certificate is not valid yet (check the clocks)"
    } else if error.contains("server does not support TLS") {
        "the server does not offer TLS (use sslmode=prefer or disable, or enable ssl on the server)"
    } else if error.contains("pg_hba.conf") && error.contains("no encryption") {
        "the server accepts only TLS connections (use sslmode=require or stricter)"
    } else if error.contains("CertificateRequired") || error.contains("certificate required") {
        "the server requires a client certificate (sslcert and sslkey)"
    } else {
        return error.to_owned();
    };
    format!("{reason}: {error}")
}

/// Connects to the Postgres `url` names, with its TLS settings.
pub async fn connect(url: &str) -> Result<AsyncPgConnection, ConnectionError> {
    let target = parse_target(url).map_err(ConnectionError::InvalidConnectionUrl)?;
    connect_to(&target, Through::Direct).await
}

/// Connects through a transaction pooler (PgBouncer in transaction mode,
/// Supavisor, RDS Proxy): the connection's own setup runs in one
/// transaction, since between transactions the pooler may hand the next
/// statement to another server connection.
pub async fn connect_pooled(url: &str) -> Result<AsyncPgConnection, ConnectionError> {
    let target = parse_target(url).map_err(ConnectionError::InvalidConnectionUrl)?;
    connect_to(&target, Through::Pooler).await
}

/// Whether a failed connect means the server is not there right now (down,
/// restarting, waking from scale-to-zero, recovering) rather than refusing
/// us (credentials, TLS, a missing database), which the next try would
/// meet too.
pub fn server_not_there(e: &ConnectionError) -> bool {
    const NOT_THERE: &[&str] = &[
        "Connection refused",
        "Connection reset",
        "os error 111",
        "os error 104",
        "the database system is starting up",
        "the database system is shutting down",
        "the database system is in recovery mode",
        "the database system is not yet accepting connections",
        "connection closed",
    ];
    let text = e.to_string();
    NOT_THERE.iter().any(|m| text.contains(m))
}

/// [`connect_to`], trying again while the server is not there (see
/// [`server_not_there`]) until `within` has passed: the first request after
/// a restart, or to a database that scales to zero, waits for it instead of
/// failing at once. Anything else fails at once.
pub async fn connect_patiently(
    target: &PgTarget,
    through: Through,
    within: std::time::Duration,
) -> Result<AsyncPgConnection, ConnectionError> {
    let deadline = tokio::time::Instant::now() + within;
    let mut pause = std::time::Duration::from_millis(25);
    loop {
        match connect_to(target, through).await {
            Err(e) if server_not_there(&e) => {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Err(e);
                }
                tokio::time::sleep(pause.min(deadline - now)).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(500));
            }
            done => return done,
        }
    }
}

/// What is at the other end of the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Through {
    /// Postgres itself (or a session-mode pooler): a session of our own.
    Direct,
    /// A transaction-mode pooler.
    Pooler,
}

/// Connects to `target`.
pub async fn connect_to(
    target: &PgTarget,
    through: Through,
) -> Result<AsyncPgConnection, ConnectionError> {
    let mut config: tokio_postgres::Config = target
        .url
        .parse()
        .map_err(|e: tokio_postgres::Error| ConnectionError::InvalidConnectionUrl(e.to_string()))?;
    let text = |e: &tokio_postgres::Error| {
        std::error::Error::source(e).map_or_else(|| e.to_string(), |s| format!("{e}: {s}"))
    };
    let fail = |e: tokio_postgres::Error| ConnectionError::BadConnection(explain(&text(&e)));
    match target.tls.mode {
        SslMode::Disable => {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, conn) = config.connect(tokio_postgres::NoTls).await.map_err(fail)?;
            finish(client, conn, through).await
        }
        SslMode::Allow => {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            match config.connect(tokio_postgres::NoTls).await {
                Ok((client, conn)) => finish(client, conn, through).await,
                // Plaintext refused: the server insists on TLS.
                Err(e) if text(&e).contains("no encryption") => {
                    config.ssl_mode(tokio_postgres::config::SslMode::Require);
                    tls_connect(&config, &target.tls, through)
                        .await
                        .map_err(fail)?
                }
                Err(e) => Err(fail(e)),
            }
        }
        SslMode::Prefer => {
            config.ssl_mode(tokio_postgres::config::SslMode::Prefer);
            tls_connect(&config, &target.tls, through)
                .await
                .map_err(fail)?
        }
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            tls_connect(&config, &target.tls, through)
                .await
                .map_err(fail)?
        }
    }
}

async fn tls_connect(
    config: &tokio_postgres::Config,
    tls: &PgTls,
    through: Through,
) -> Result<Result<AsyncPgConnection, ConnectionError>, tokio_postgres::Error> {
    let rustls = match client_config(tls) {
        Ok(c) => c,
        Err(e) => return Ok(Err(ConnectionError::BadConnection(format!("TLS: {e}")))),
    };
    let (client, conn) = config
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(rustls))
        .await?;
    Ok(finish(client, conn, through).await)
}

/// diesel-async's setup (`SET TIME ZONE`, `SET CLIENT_ENCODING`) prepares
/// and executes statements in separate round trips. On a session of our
/// own that is fine; through a transaction pooler the two round trips
/// may land on different server connections ("prepared statement s1 does
/// not exist"), so there the setup runs inside `BEGIN … COMMIT`, which
/// pins one server connection. (Notifications need a session, which a
/// transaction pooler does not give: `LISTEN` uses the direct endpoint.)
async fn finish<S>(
    client: tokio_postgres::Client,
    conn: tokio_postgres::Connection<tokio_postgres::Socket, S>,
    through: Through,
) -> Result<AsyncPgConnection, ConnectionError>
where
    S: tokio_postgres::tls::TlsStream + Unpin + Send + 'static,
{
    match through {
        Through::Direct => AsyncPgConnection::try_from_client_and_connection(client, conn).await,
        Through::Pooler => {
            // The socket's task ends when the client (and so the
            // connection) is dropped.
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "pooled Postgres connection closed");
                }
            });
            let setup = |e: tokio_postgres::Error| {
                ConnectionError::CouldntSetupConfiguration(diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::Unknown,
                    Box::new(e.to_string()),
                ))
            };
            client.batch_execute("BEGIN").await.map_err(setup)?;
            let mut pg = AsyncPgConnection::try_from(client).await?;
            diesel_async::SimpleAsyncConnection::batch_execute(&mut pg, "COMMIT")
                .await
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
            Ok(pg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_parameters_are_taken_out_and_the_rest_kept() {
        let t = parse_target(
            "postgres://u:p@db.example.com:5432/app?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(
            t.url,
            "postgres://u:p@db.example.com:5432/app?application_name=x"
        );
        assert_eq!(t.tls.mode, SslMode::VerifyFull);
        assert_eq!(t.tls.roots, Roots::File("/ca.pem".into()));
        assert!(t.tls.verifies().is_some());

        let t = parse_target("postgres://h/db").unwrap();
        assert_eq!(
            (t.tls.mode, t.url.as_str()),
            (SslMode::Prefer, "postgres://h/db")
        );
        assert!(t.tls.verifies().is_none(), "prefer never verifies");

        let t = parse_target("postgres://h/db?sslmode=require&sslrootcert=system").unwrap();
        assert_eq!(
            t.tls.verifies(),
            Some(&Roots::System),
            "require with a root verifies the CA"
        );
        assert!(
            parse_target("postgres://h/db?sslmode=require")
                .unwrap()
                .tls
                .verifies()
                .is_none()
        );
        let t = parse_target("postgres://h/db?sslcert=/c.pem&sslkey=/k.pem").unwrap();
        assert_eq!(t.tls.client_cert, Some(("/c.pem".into(), "/k.pem".into())));
    }

    #[test]
    fn other_parameters_keep_their_encoding() {
        let t =
            parse_target("postgres://h/db?options=-c%20search_path%3Dx&sslmode=disable").unwrap();
        assert_eq!(t.url, "postgres://h/db?options=-c%20search_path%3Dx");
    }

    #[test]
    fn bad_parameters_are_named_without_the_url() {
        let e = parse_target("postgres://u:secret@h/db?sslmode=sometimes").unwrap_err();
        assert!(e.contains("sslmode") && !e.contains("secret"), "{e}");
        let e = parse_target("postgres://u:secret@h/db?sslcert=/c.pem").unwrap_err();
        assert!(e.contains("sslkey") && !e.contains("secret"), "{e}");
    }

    #[test]
    fn tls_failures_are_explained() {
        assert!(explain("invalid peer certificate: UnknownIssuer").contains("trusted CA"));
        assert!(explain("invalid peer certificate: NotValidForName").contains("host name"));
        assert!(explain("invalid peer certificate: Expired").contains("expired"));
        assert!(
            explain("error performing TLS handshake: server does not support TLS")
                .contains("does not offer TLS")
        );
    }
}

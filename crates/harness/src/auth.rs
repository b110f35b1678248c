//! Real RS256 tokens for the benchmark and the chaos harness: a key pair,
//! its certificate served in Google's x509 format over HTTPS on loopback
//! (production refuses plain-HTTP key URLs), and tokens signed with it.
//!
//! The HTTPS server's certificate is issued by a CA made for this run; the
//! app trusts it through `SSL_CERT_FILE` (read by rustls-native-certs, which
//! the app's HTTP client loads its roots from) and nothing else.

use anyhow::Context as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub const PROJECT: &str = "trellis-bench";

pub struct Keys {
    /// `https://127.0.0.1:<port>/keys`: the key document.
    pub url: String,
    key: EncodingKey,
    /// The PEM of the CA that issued the key server's certificate.
    ca_file: PathBuf,
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Keys {
    pub async fn start() -> anyhow::Result<Self> {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)?;
        let cert = rcgen::CertificateParams::new(vec!["bench".into()])?.self_signed(&kp)?;
        let body = serde_json::json!({"bench-key": cert.pem()}).to_string();
        let response = Arc::new(format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: public, max-age=3600\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ));

        // A CA for this run, and the server's certificate for 127.0.0.1.
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Trellis harness CA");
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate()?;
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])?
            .signed_by(&leaf_key, &issuer)?;
        let ca_file = std::env::temp_dir().join(format!(
            "trellis-harness-ca-{}.pem",
            test_support::unique_suffix()
        ));
        std::fs::write(&ca_file, ca_cert.pem())?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(
                    vec![leaf.der().clone(), ca_cert.der().clone()],
                    rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
                )?,
        );

        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(tcp) = conn else { continue };
                let (tls, response) = (tls.clone(), response.clone());
                std::thread::spawn(move || serve_keys(tcp, tls, &response));
            }
        });
        Ok(Self {
            url: format!("https://{addr}/keys"),
            key: EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes())?,
            ca_file,
            addr,
            stop,
        })
    }

    /// `SSL_CERT_FILE` for the app: the only root it then trusts.
    pub fn ca_file(&self) -> String {
        self.ca_file.display().to_string()
    }

    /// A Firebase-shaped ID token for `uid`, valid for an hour.
    pub fn token(
        &self,
        uid: &str,
        email: Option<&str>,
        name: Option<&str>,
    ) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        self.sign(&serde_json::json!({
            "iss": format!("https://securetoken.google.com/{PROJECT}"),
            "aud": PROJECT,
            "sub": uid,
            "iat": now,
            "exp": now + 3600,
            "auth_time": now,
            "email": email,
            // The provider vouches for the address (a welcome mail needs it).
            "email_verified": email.is_some(),
            "name": name,
            "firebase": {"sign_in_provider": "password"},
        }))
    }

    /// A token with exactly these claims, signed with the served key (for
    /// tokens that are well signed but wrong: expired, another audience, ...).
    pub fn sign(&self, claims: &serde_json::Value) -> anyhow::Result<String> {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("bench-key".into());
        Ok(jsonwebtoken::encode(&h, claims, &self.key)?)
    }

    /// One token per `(uid, email)`, signed on every core: RS256 signing
    /// costs about a millisecond each.
    pub fn tokens(&self, users: &[(String, Option<String>)]) -> anyhow::Result<Vec<String>> {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        let chunk = users.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            let parts: Vec<_> = users
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|(uid, email)| self.token(uid, email.as_deref(), None))
                            .collect::<anyhow::Result<Vec<_>>>()
                    })
                })
                .collect();
            let mut all = Vec::with_capacity(users.len());
            for p in parts {
                all.extend(
                    p.join()
                        .map_err(|_| anyhow::anyhow!("a signing thread panicked"))??,
                );
            }
            Ok(all)
        })
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the flag.
        let _ = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

/// One HTTPS exchange: read the request head, answer with the key document.
fn serve_keys(tcp: std::net::TcpStream, tls: Arc<rustls::ServerConfig>, response: &str) {
    let run = || -> anyhow::Result<()> {
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        tcp.set_write_timeout(Some(Duration::from_secs(5)))?;
        let conn = rustls::ServerConnection::new(tls).context("a TLS session")?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        let mut head = Vec::new();
        let mut buf = [0_u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            head.extend_from_slice(&buf[..n]);
        }
        stream.write_all(response.as_bytes())?;
        stream.conn.send_close_notify();
        stream.flush()?;
        Ok(())
    };
    let _ = run();
}

//! TLS material a deployment hands its Redis clients (both drivers take it
//! in this one shape): a CA to trust besides the system's roots, and a
//! client certificate for servers that ask for one.

/// PEM bytes, read from `REDIS_TLS_CA_FILE`, `REDIS_TLS_CERT_FILE` and
/// `REDIS_TLS_KEY_FILE`. Empty: the system's roots only, no client
/// certificate.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsMaterial {
    /// Certificates to trust besides the system's roots (PEM).
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate chain and its private key (PEM).
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

/// Never prints a key.
impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca", &self.ca_pem.is_some())
            .field("client_cert", &self.client.is_some())
            .finish()
    }
}

/// What a TLS handshake with a dependency showed (for `app doctor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsHandshake {
    /// `TLSv1.3`, `TLSv1.2`.
    pub protocol: String,
    /// What the server's certificate was verified against (`system roots`,
    /// a CA file), or `None` when it was not verified (`sslmode=require`).
    pub verified_against: Option<String>,
    /// The server's certificate (DER), for its subject and expiry.
    pub peer_certificate: Option<Vec<u8>>,
}

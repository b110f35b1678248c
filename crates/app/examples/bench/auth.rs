//! Real RS256 tokens for the benchmark: a key pair, its certificate served in
//! Google's x509 format on loopback, and tokens signed with it.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub(crate) const PROJECT: &str = "trellis-bench";

pub(crate) struct Keys {
    pub(crate) url: String,
    key: EncodingKey,
}

impl Keys {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)?;
        let cert = rcgen::CertificateParams::new(vec!["bench".into()])?.self_signed(&kp)?;
        let body = serde_json::json!({"bench-key": cert.pem()}).to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/keys", listener.local_addr()?);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let res = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: public, max-age=3600\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(res.as_bytes()).await;
                });
            }
        });
        Ok(Self {
            url,
            key: EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes())?,
        })
    }

    /// A Firebase-shaped ID token for `uid`, valid for an hour.
    pub(crate) fn token(
        &self,
        uid: &str,
        email: Option<&str>,
        name: Option<&str>,
    ) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            "iss": format!("https://securetoken.google.com/{PROJECT}"),
            "aud": PROJECT,
            "sub": uid,
            "iat": now,
            "exp": now + 3600,
            "auth_time": now,
            "email": email,
            "name": name,
            "firebase": {"sign_in_provider": "password"},
        });
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("bench-key".into());
        Ok(jsonwebtoken::encode(&h, &claims, &self.key)?)
    }
}

//! Google service-account keys (the JSON file `GOOGLE_APPLICATION_CREDENTIALS`
//! names).

use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use std::path::Path;

/// Where Google issues access tokens when the key file does not say.
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

/// The parts of a service-account key file the sender needs.
#[derive(Clone, Deserialize)]
pub struct ServiceAccountKey {
    #[serde(rename = "type")]
    pub kind: String,
    pub project_id: Option<String>,
    pub private_key_id: Option<String>,
    private_key: SecretString,
    pub client_email: String,
    #[serde(default = "default_token_uri")]
    pub token_uri: String,
}

fn default_token_uri() -> String {
    GOOGLE_TOKEN_URL.to_owned()
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("project_id", &self.project_id)
            .field("private_key_id", &self.private_key_id)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountKey {
    /// Parses a key file's JSON; refuses anything but a service-account key
    /// with an RSA private key.
    pub fn from_json(json: &str) -> anyhow::Result<Self> {
        let key: Self = serde_json::from_str(json)
            .map_err(|e| anyhow::anyhow!("not a Google service-account key file: {e}"))?;
        anyhow::ensure!(
            key.kind == "service_account",
            "the key file is of type {:?}, not \"service_account\" (user credentials cannot send FCM messages)",
            key.kind
        );
        jsonwebtoken::EncodingKey::from_rsa_pem(key.private_key.expose_secret().as_bytes())
            .map_err(|e| anyhow::anyhow!("the key file's private_key is not an RSA key: {e}"))?;
        Ok(key)
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let json = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Self::from_json(&json).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub(crate) fn encoding_key(&self) -> anyhow::Result<jsonwebtoken::EncodingKey> {
        Ok(jsonwebtoken::EncodingKey::from_rsa_pem(
            self.private_key.expose_secret().as_bytes(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_credentials_and_garbage_are_refused_with_a_reason() {
        let err = ServiceAccountKey::from_json("{}").unwrap_err().to_string();
        assert!(
            err.contains("not a Google service-account key file"),
            "{err}"
        );
        let user = r#"{"type":"authorized_user","private_key":"x","client_email":"a@b"}"#;
        let err = ServiceAccountKey::from_json(user).unwrap_err().to_string();
        assert!(err.contains("not \"service_account\""), "{err}");
        let bad_key = r#"{"type":"service_account","private_key":"nope","client_email":"a@b"}"#;
        let err = ServiceAccountKey::from_json(bad_key)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an RSA key"), "{err}");
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let key: ServiceAccountKey = serde_json::from_str(
            r#"{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----secret","client_email":"a@b"}"#,
        )
        .unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert_eq!(key.token_uri, GOOGLE_TOKEN_URL);
    }
}

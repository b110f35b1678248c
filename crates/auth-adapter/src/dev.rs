//! Local development tokens: HS256 with a local secret, carrying the same
//! claims a Firebase ID token does. Accepted only when the verifier is built
//! with a dev secret (local mode); `app dev-token` mints them.

use crate::claims::{FirebaseClaims, FirebaseInfo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// The `kid` that marks a dev token.
pub const DEV_KEY_ID: &str = "trellis-dev";

/// What a dev token asserts.
#[derive(Debug, Clone)]
pub struct DevTokenRequest {
    pub uid: String,
    pub email: Option<String>,
    /// The `email_verified` claim, when there is an address: whether the
    /// identity provider vouches for it (a welcome mail needs that).
    pub email_verified: bool,
    pub name: Option<String>,
    pub ttl: std::time::Duration,
    /// Custom claims (as the Admin SDK sets them), e.g. `{"ops": "admin"}`.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// Mints a dev token for `project_id`, signed with `secret`.
pub fn mint_dev_token(
    secret: &str,
    project_id: &str,
    req: &DevTokenRequest,
) -> anyhow::Result<String> {
    anyhow::ensure!(
        !req.uid.is_empty() && req.uid.chars().count() <= 128,
        "uid must be 1 to 128 characters"
    );
    let now = chrono::Utc::now().timestamp();
    let ttl = i64::try_from(req.ttl.as_secs()).unwrap_or(3600);
    let claims = FirebaseClaims {
        iss: Some(format!("https://securetoken.google.com/{project_id}")),
        aud: Some(project_id.into()),
        sub: Some(req.uid.clone()),
        exp: Some(now + ttl),
        iat: Some(now),
        auth_time: Some(now),
        email_verified: req.email.as_ref().map(|_| req.email_verified),
        email: req.email.clone(),
        name: req.name.clone(),
        picture: None,
        firebase: Some(FirebaseInfo {
            sign_in_provider: Some("custom".into()),
        }),
        custom: req.claims.clone(),
    };
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(DEV_KEY_ID.into());
    Ok(jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

//! `FirebaseUserAdmin`: deletes Firebase Auth accounts through the Identity
//! Toolkit API (`accounts:delete`), as the deletion saga's last step. With
//! a service account it authenticates like the FCM sender (the same OAuth2
//! token source, another scope); against the Auth emulator it sends the
//! emulator's `Bearer owner`.

use crate::credentials::ServiceAccountKey;
use crate::oauth::{AccessTokens, IDENTITY_SCOPE};
use async_trait::async_trait;
use domain::FirebaseUid;
use ports::{IdentityAdmin, IdentityAdminError, SendPushError};
use std::sync::Arc;
use std::time::Duration;

/// Google's Identity Toolkit.
pub const IDENTITY_TOOLKIT_URL: &str = "https://identitytoolkit.googleapis.com";

enum Credentials {
    ServiceAccount(Arc<AccessTokens>),
    /// The Auth emulator takes `Bearer owner` for admin calls.
    Emulator,
}

/// Deletes Firebase Auth users of one project.
pub struct FirebaseUserAdmin {
    http: reqwest::Client,
    delete_url: String,
    credentials: Credentials,
}

impl std::fmt::Debug for FirebaseUserAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirebaseUserAdmin")
            .field("delete_url", &self.delete_url)
            .finish_non_exhaustive()
    }
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .build()?)
}

fn delete_url(base: &str, project: &str) -> String {
    format!(
        "{}/v1/projects/{project}/accounts:delete",
        base.trim_end_matches('/')
    )
}

impl FirebaseUserAdmin {
    /// With a service account, against `base_url` ([`IDENTITY_TOOLKIT_URL`]
    /// unless testing); `token_url` overrides the key's `token_uri`.
    pub fn new(
        key: &ServiceAccountKey,
        project: &str,
        base_url: &str,
        token_url: Option<String>,
    ) -> anyhow::Result<Self> {
        let http = client()?;
        let tokens = AccessTokens::new(
            http.clone(),
            IDENTITY_SCOPE,
            key,
            token_url.unwrap_or_else(|| key.token_uri.clone()),
            Duration::from_secs(300),
            Duration::from_secs(5),
        )?;
        Ok(Self {
            http,
            delete_url: delete_url(base_url, project),
            credentials: Credentials::ServiceAccount(Arc::new(tokens)),
        })
    }

    /// Against the Auth emulator at `host` (`FIREBASE_AUTH_EMULATOR_HOST`,
    /// `host:port`).
    pub fn emulator(host: &str, project: &str) -> anyhow::Result<Self> {
        Ok(Self {
            http: client()?,
            delete_url: delete_url(
                &format!("http://{host}/identitytoolkit.googleapis.com"),
                project,
            ),
            credentials: Credentials::Emulator,
        })
    }
}

fn unavailable(e: impl std::fmt::Display) -> IdentityAdminError {
    IdentityAdminError::Unavailable(anyhow::anyhow!("Identity Toolkit: {e}"))
}

#[async_trait]
impl IdentityAdmin for FirebaseUserAdmin {
    async fn delete_user(&self, uid: &FirebaseUid) -> Result<(), IdentityAdminError> {
        let bearer = match &self.credentials {
            Credentials::Emulator => "owner".to_owned(),
            Credentials::ServiceAccount(tokens) => match tokens.get().await {
                Ok(t) => t.bearer.clone(),
                Err(SendPushError::Unavailable { reason, .. }) => return Err(unavailable(reason)),
                Err(e) => return Err(IdentityAdminError::Unknown(anyhow::anyhow!("{e}"))),
            },
        };
        let response = self
            .http
            .post(&self.delete_url)
            .bearer_auth(bearer)
            .json(&serde_json::json!({ "localId": uid.as_str() }))
            .send()
            .await
            .map_err(unavailable)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        // Already gone: what deleting wanted.
        if status == reqwest::StatusCode::BAD_REQUEST && body.contains("USER_NOT_FOUND") {
            return Ok(());
        }
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Err(unavailable(format!("{status} {message}")))
        } else {
            Err(IdentityAdminError::Unknown(anyhow::anyhow!(
                "Identity Toolkit refused accounts:delete: {status} {message}"
            )))
        }
    }

    fn describe(&self) -> String {
        match &self.credentials {
            Credentials::Emulator => format!("the Auth emulator ({})", self.delete_url),
            Credentials::ServiceAccount(_) => format!("Identity Toolkit ({})", self.delete_url),
        }
    }
}

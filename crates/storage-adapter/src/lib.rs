//! Object storage for Trellis uploads (the `ObjectStore` port).
//!
//! - [`S3Store`]: any S3-compatible service (AWS S3, Google Cloud Storage's
//!   S3 interoperability, Cloudflare R2, MinIO). Clients upload straight
//!   to the bucket with a presigned POST policy, which the store enforces
//!   (one key, one content type, a size range, an expiry).
//! - [`FsStore`]: a directory (`var/storage` by default) for local
//!   development, served by the app itself under `/storage` with the same
//!   presigned flow (a signed policy, a signed read link), so clients
//!   cannot tell the difference.
//!
//! Signing is hand-written SigV4 (`sigv4.rs`, on `hmac` + `sha2`, checked
//! against AWS's published examples) rather than a crate: the POST policy
//! that uploads need is not in the small signing crates, and the AWS SDK
//! would add hundreds of crates to sign a few URLs.

mod fs;
mod s3;
mod sigv4;

pub use fs::{FsStore, configure as configure_fs_routes};
pub use s3::S3Store;

use ports::StorageError;
use secrecy::SecretString;
use std::time::Duration;

/// Where objects go (`app` fills it from `STORAGE_*` and `AWS_*`).
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// `STORAGE_BUCKET`; without one, the file-system store.
    pub bucket: Option<String>,
    /// `STORAGE_ENDPOINT`: an S3-compatible service's URL (path-style
    /// addressing); unset means AWS S3 (virtual-hosted addressing).
    pub endpoint: Option<String>,
    /// `STORAGE_REGION` (default `us-east-1`).
    pub region: String,
    /// `STORAGE_PUBLIC_BASE_URL`: read links are `<base>/<key>` (a CDN in
    /// front of the bucket) instead of presigned GETs.
    pub public_base_url: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
    /// Each call the server makes to the store.
    pub timeout: Duration,
}

impl StorageSettings {
    pub fn new() -> Self {
        Self {
            bucket: None,
            endpoint: None,
            region: "us-east-1".into(),
            public_base_url: None,
            access_key_id: None,
            secret_access_key: None,
            timeout: Duration::from_secs(10),
        }
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self::new()
    }
}

/// A request that got no answer. reqwest's error names the URL it was
/// sending to, and a presigned URL carries its signature in the query: only
/// the scheme, host and path are kept.
pub(crate) fn transport_error(e: reqwest::Error) -> StorageError {
    let target = e.url().map(|u| {
        let mut u = u.clone();
        u.set_query(None);
        u.set_fragment(None);
        let _ = u.set_password(None);
        let _ = u.set_username("");
        u.to_string()
    });
    let e = anyhow::Error::new(e.without_url());
    StorageError::Unavailable(match target {
        Some(t) => e.context(format!("object store request to {t} failed")),
        None => e.context("object store request failed"),
    })
}

/// 5xx and throttling are worth retrying; anything else is a refusal.
pub(crate) fn classify_status(status: reqwest::StatusCode, what: &str, body: &str) -> StorageError {
    let code = crate::s3_error_code(body);
    let e = anyhow::anyhow!("object store {what}: {status} {code}");
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        StorageError::Unavailable(e)
    } else {
        StorageError::Unknown(e)
    }
}

/// The `<Code>` of an S3 error document, if any.
fn s3_error_code(body: &str) -> &str {
    body.split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map_or("", |(code, _)| code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn transport_errors_never_carry_a_presigned_urls_signature() {
        // Nothing listens on port 1.
        let url = "http://127.0.0.1:1/bucket/users/1/a?X-Amz-Credential=AKIDEXAMPLE&X-Amz-Signature=deadbeefcafe";
        let e = reqwest::get(url).await.unwrap_err();
        let StorageError::Unavailable(e) = transport_error(e) else {
            panic!("a transport failure is Unavailable");
        };
        let text = format!("{e:#} {e:?}");
        assert!(!text.contains("deadbeefcafe"), "{text}");
        assert!(!text.contains("AKIDEXAMPLE"), "{text}");
        assert!(text.contains("127.0.0.1:1/bucket/users/1/a"), "{text}");
    }
}

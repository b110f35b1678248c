//! `S3Store`: an S3-compatible bucket behind the `ObjectStore` port.
//!
//! Every request the server makes is itself presigned (query-string
//! SigV4, `UNSIGNED-PAYLOAD`), so one signing path serves the client's
//! links and the server's own HEAD, DELETE and listing calls.

use crate::sigv4::Signer;
use crate::{StorageSettings, classify_status, transport_error};
use async_trait::async_trait;
use chrono::Utc;
use futures_util::TryStreamExt as _;
use ports::{ObjectInfo, ObjectStore, PostPolicy, PresignedPost, StorageError};
use secrecy::ExposeSecret as _;
use std::collections::BTreeMap;
use std::time::Duration;
use url::Url;

/// How many deletes run at once when a prefix is emptied.
const DELETE_CONCURRENCY: usize = 8;
/// At most this many listing pages (of 1000 keys) per `delete_prefix`.
const MAX_LIST_PAGES: usize = 1000;
/// How long the server's own presigned calls are valid.
const CALL_EXPIRY_SECS: u64 = 300;

/// A bucket on AWS S3 or any S3-compatible service.
#[derive(Clone)]
pub struct S3Store {
    signer: Signer,
    bucket: String,
    /// Where the bucket's objects are: `https://<bucket>.s3.<region>.amazonaws.com`
    /// (virtual-hosted) or `<endpoint>/<bucket>` (path style).
    base: Url,
    public_base: Option<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("base", &self.base.as_str())
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    pub fn new(settings: &StorageSettings, bucket: &str) -> anyhow::Result<Self> {
        let (Some(access_key), Some(secret_key)) =
            (&settings.access_key_id, &settings.secret_access_key)
        else {
            anyhow::bail!(
                "STORAGE_BUCKET is set but AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are not"
            );
        };
        let base = match &settings.endpoint {
            Some(endpoint) => {
                let mut url = Url::parse(endpoint)
                    .map_err(|e| anyhow::anyhow!("STORAGE_ENDPOINT {endpoint:?}: {e}"))?;
                url.path_segments_mut()
                    .map_err(|()| {
                        anyhow::anyhow!("STORAGE_ENDPOINT {endpoint:?} is not a base URL")
                    })?
                    .pop_if_empty()
                    .push(bucket);
                url
            }
            None => Url::parse(&format!(
                "https://{bucket}.s3.{}.amazonaws.com/",
                settings.region
            ))?,
        };
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .build()?;
        Ok(Self {
            signer: Signer {
                access_key: access_key.clone(),
                secret_key: secret_key.expose_secret().to_owned(),
                region: settings.region.clone(),
            },
            bucket: bucket.to_owned(),
            base,
            public_base: settings
                .public_base_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_owned()),
            http,
        })
    }

    /// `scheme://host[:port]` and the host as signed (`host[:port]`).
    fn host(&self) -> String {
        let host = self.base.host_str().unwrap_or_default();
        match self.base.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }

    /// The path of `key` (or of the bucket itself for `""`), unencoded.
    fn path(&self, key: &str) -> String {
        let base = self.base.path().trim_end_matches('/');
        format!("{base}/{key}")
    }

    /// A presigned URL for `method` on `key` with `extra` query parameters.
    fn presigned(
        &self,
        method: &str,
        key: &str,
        extra: &[(&str, &str)],
        expires_secs: u64,
    ) -> String {
        let path = self.path(key);
        let query =
            self.signer
                .presign_query(method, &self.host(), &path, extra, expires_secs, Utc::now());
        format!(
            "{}://{}{}?{query}",
            self.base.scheme(),
            self.host(),
            crate::sigv4::uri_encode(&path, true)
        )
    }

    /// For `app doctor`: one signed request with the configured
    /// credentials (a `ListObjectsV2` of one key, which account deletion
    /// needs anyway to sweep a user's files).
    pub async fn check(&self) -> Result<String, String> {
        match self.list_page("trellis-doctor/", None).await {
            Ok(_) => Ok(format!(
                "bucket {} at {}: a signed list request was accepted",
                self.bucket,
                self.host()
            )),
            Err(e) => Err(format!("bucket {} at {}: {e}", self.bucket, self.host())),
        }
    }

    /// One page of the keys under `prefix`, and the token of the next.
    async fn list_page(
        &self,
        prefix: &str,
        token: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), StorageError> {
        let mut extra = vec![("list-type", "2"), ("prefix", prefix)];
        if let Some(t) = token {
            extra.push(("continuation-token", t));
        }
        let url = self.presigned("GET", "", &extra, CALL_EXPIRY_SECS);
        let response = self.http.get(url).send().await.map_err(transport_error)?;
        let status = response.status();
        let body = response.text().await.map_err(transport_error)?;
        if !status.is_success() {
            return Err(classify_status(status, "list", &body));
        }
        let keys = xml_values(&body, "Key");
        let truncated =
            xml_values(&body, "IsTruncated").first().map(String::as_str) == Some("true");
        let next = xml_values(&body, "NextContinuationToken")
            .into_iter()
            .next();
        Ok((keys, if truncated { next } else { None }))
    }
}

/// The text of every `<tag>...</tag>` in `xml`, unescaped. S3's listing
/// is flat enough that this is all the parsing it needs.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(unescape(&after[..end]));
        rest = &after[end + close.len()..];
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#13;", "\r")
        .replace("&amp;", "&")
}

#[async_trait]
impl ObjectStore for S3Store {
    fn presign_post(&self, policy: &PostPolicy) -> Result<PresignedPost, StorageError> {
        let now = Utc::now();
        let expires_at = now
            + chrono::Duration::from_std(policy.expires_in)
                .map_err(|e| StorageError::Unknown(e.into()))?;
        let conditions = vec![
            serde_json::json!({ "bucket": self.bucket }),
            serde_json::json!({ "key": policy.key }),
            serde_json::json!({ "Content-Type": policy.content_type }),
            serde_json::json!(["content-length-range", policy.min_bytes, policy.max_bytes]),
        ];
        let fields = BTreeMap::from([
            ("key".to_owned(), policy.key.clone()),
            ("Content-Type".to_owned(), policy.content_type.clone()),
        ]);
        let fields = self.signer.post_fields(conditions, fields, expires_at, now);
        // POST goes to the bucket itself.
        Ok(PresignedPost {
            url: self.base.to_string(),
            fields,
            expires_at,
        })
    }

    fn public_url(&self, key: &str) -> Option<String> {
        self.public_base
            .as_ref()
            .map(|base| format!("{base}/{}", crate::sigv4::uri_encode(key, true)))
    }

    fn read_url(&self, key: &str, expires_in: Duration) -> Result<String, StorageError> {
        if let Some(url) = self.public_url(key) {
            return Ok(url);
        }
        Ok(self.presigned("GET", key, &[], expires_in.as_secs().clamp(1, 604_800)))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        let url = self.presigned("HEAD", key, &[], CALL_EXPIRY_SECS);
        let response = self.http.head(url).send().await.map_err(transport_error)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(classify_status(status, "head", ""));
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let size = header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                StorageError::Unknown(anyhow::anyhow!("HEAD {key}: no Content-Length"))
            })?;
        Ok(Some(ObjectInfo {
            size,
            content_type: header("content-type"),
        }))
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let url = self.presigned("DELETE", key, &[], CALL_EXPIRY_SECS);
        let response = self
            .http
            .delete(url)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(classify_status(status, "delete", &body))
    }

    async fn copy(&self, from: &str, to: &str) -> Result<bool, StorageError> {
        // CopyObject: a PUT of `to` naming the source in a signed header.
        let source = format!("/{}/{}", self.bucket, crate::sigv4::uri_encode(from, true));
        let path = self.path(to);
        let query = self.signer.presign_query_with_headers(
            "PUT",
            &self.host(),
            &path,
            &[],
            &[("x-amz-copy-source", &source)],
            CALL_EXPIRY_SECS,
            Utc::now(),
        );
        let url = format!(
            "{}://{}{}?{query}",
            self.base.scheme(),
            self.host(),
            crate::sigv4::uri_encode(&path, true)
        );
        let response = self
            .http
            .put(url)
            .header("x-amz-copy-source", &source)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::NOT_FOUND && crate::s3_error_code(&body) == "NoSuchKey" {
            return Ok(false);
        }
        // A copy can fail after its 200 has started: the error is then in
        // the body.
        if !status.is_success() || body.contains("<Error>") {
            return Err(classify_status(status, "copy", &body));
        }
        Ok(true)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StorageError> {
        if prefix.is_empty() || !prefix.ends_with('/') {
            return Err(StorageError::Unknown(anyhow::anyhow!(
                "delete_prefix needs a prefix ending in '/', got {prefix:?}"
            )));
        }
        let mut deleted = 0u64;
        let mut token: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let (keys, next) = self.list_page(prefix, token.as_deref()).await?;
            let n = keys.len() as u64;
            futures_util::stream::iter(keys.into_iter().map(Ok))
                .try_for_each_concurrent(DELETE_CONCURRENCY, |key: String| async move {
                    self.delete(&key).await
                })
                .await?;
            deleted += n;
            match next {
                Some(t) => token = Some(t),
                None => return Ok(deleted),
            }
        }
        // Only a prefix of over a million objects gets here; the caller
        // retries and continues where this stopped.
        Err(StorageError::Unavailable(anyhow::anyhow!(
            "{prefix}: more than {MAX_LIST_PAGES} pages; {deleted} deleted so far"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_xml_is_read_and_unescaped() {
        let xml = "<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>a/1</Key></Contents><Contents><Key>a/&amp;2</Key></Contents><NextContinuationToken>t+1</NextContinuationToken></ListBucketResult>";
        assert_eq!(xml_values(xml, "Key"), ["a/1", "a/&2"]);
        assert_eq!(xml_values(xml, "NextContinuationToken"), ["t+1"]);
        assert!(xml_values(xml, "Missing").is_empty());
    }
}

//! `FsStore`: objects in a directory, for local development, with the
//! same presigned flow as S3: `presign_post` signs a policy the app checks
//! when the form arrives at `POST /storage/upload`, and `read_url` signs a
//! link `GET /storage/o/<key>` serves until it expires. [`configure`]
//! mounts both routes on the app.
//!
//! Longer than 450 lines: the local store mirrors S3's presigned flow end to
//! end (policy signing, the upload form's checks, signed reads, the routes
//! that serve them), which reads as one piece.

use crate::sigv4::hex;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use async_trait::async_trait;
use base64::Engine as _;
use chrono::Utc;
use hmac::{Hmac, Mac};
use ports::{ObjectInfo, ObjectStore, PostPolicy, PresignedPost, StorageError};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The largest form `POST /storage/upload` reads (the largest purpose's
/// limit plus room for the other fields).
const MAX_FORM_BYTES: usize = 20 * 1024 * 1024 + 64 * 1024;

/// What a local form allows (signed; the client cannot change it).
#[derive(Debug, Serialize, Deserialize)]
struct LocalPolicy {
    key: String,
    content_type: String,
    min: u64,
    max: u64,
    /// Unix seconds.
    expires: i64,
}

/// A directory of objects, served by the app under `/storage`.
#[derive(Clone)]
pub struct FsStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    /// Where the app is reached, e.g. `http://localhost:8080`.
    base_url: String,
    public_base: Option<String>,
    key: Vec<u8>,
}

impl std::fmt::Debug for FsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsStore")
            .field("root", &self.inner.root)
            .field("base_url", &self.inner.base_url)
            .finish_non_exhaustive()
    }
}

fn storage_error(e: std::io::Error) -> StorageError {
    StorageError::Unavailable(anyhow::Error::new(e).context("local object store"))
}

/// Keys are `/`-separated segments of `[A-Za-z0-9._-]`, none `.` or `..`.
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 1024
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

impl FsStore {
    /// Objects under `root`; links and forms point at `base_url` (the
    /// app's own address); `signing_key` signs them (a server secret).
    pub fn new(root: impl Into<PathBuf>, base_url: &str, signing_key: &[u8]) -> Self {
        Self {
            inner: Arc::new(Inner {
                root: root.into(),
                base_url: base_url.trim_end_matches('/').to_owned(),
                public_base: None,
                key: signing_key.to_vec(),
            }),
        }
    }

    /// Read links under `base` instead of signed ones.
    pub fn with_public_base(self, base: Option<String>) -> Self {
        let inner = Inner {
            root: self.inner.root.clone(),
            base_url: self.inner.base_url.clone(),
            public_base: base.map(|b| b.trim_end_matches('/').to_owned()),
            key: self.inner.key.clone(),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    fn sign(&self, what: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.inner.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"trellis:storage:");
        mac.update(what.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    fn verify(&self, what: &str, signature: &str) -> bool {
        // Both are hex of equal length when genuine; compare without
        // stopping at the first difference.
        let want = self.sign(what);
        want.len() == signature.len()
            && want
                .bytes()
                .zip(signature.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    fn object_path(&self, key: &str) -> PathBuf {
        self.inner.root.join("objects").join(key)
    }

    fn type_path(&self, key: &str) -> PathBuf {
        self.inner.root.join("types").join(key)
    }

    /// A new object for `key`, written to a temporary file beside it and
    /// put in place by [`Staged::commit`] (blocking I/O: called on a
    /// blocking thread).
    fn stage(&self, key: &str) -> std::io::Result<Staged> {
        let path = self.object_path(key);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
        let file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        Ok(Staged {
            file: Some(file),
            tmp,
            path,
            type_path: self.type_path(key),
        })
    }

    async fn read(&self, key: &str) -> std::io::Result<Option<(Vec<u8>, String)>> {
        match tokio::fs::read(self.object_path(key)).await {
            Ok(bytes) => {
                let content_type = tokio::fs::read_to_string(self.type_path(key))
                    .await
                    .unwrap_or_else(|_| "application/octet-stream".into());
                Ok(Some((bytes, content_type)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// An object being written; removed unless committed.
struct Staged {
    file: Option<std::io::BufWriter<std::fs::File>>,
    tmp: PathBuf,
    path: PathBuf,
    type_path: PathBuf,
}

impl Staged {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write as _;
        match &mut self.file {
            Some(f) => f.write_all(bytes),
            None => Err(std::io::Error::other("already committed")),
        }
    }

    /// Puts the object and its content type in place.
    fn commit(mut self, content_type: &str) -> std::io::Result<()> {
        let done = self.put_in_place(content_type);
        if done.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        done
    }

    fn put_in_place(&mut self, content_type: &str) -> std::io::Result<()> {
        use std::io::Write as _;
        if let Some(mut f) = self.file.take() {
            f.flush()?;
        }
        if let Some(dir) = self.type_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let type_tmp = self
            .type_path
            .with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
        std::fs::write(&type_tmp, content_type)?;
        std::fs::rename(&type_tmp, &self.type_path)?;
        std::fs::rename(&self.tmp, &self.path)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Not committed (refused, or the client went away): no trace.
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

async fn remove_file(path: &Path) -> std::io::Result<()> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

async fn count_files(dir: &Path) -> std::io::Result<u64> {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries = match tokio::fs::read_dir(&d).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        while let Some(entry) = entries.next_entry().await? {
            if entry.file_type().await?.is_dir() {
                stack.push(entry.path());
            } else {
                n += 1;
            }
        }
    }
    Ok(n)
}

async fn remove_dir(dir: &Path) -> std::io::Result<()> {
    match tokio::fs::remove_dir_all(dir).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[async_trait]
impl ObjectStore for FsStore {
    fn presign_post(&self, policy: &PostPolicy) -> Result<PresignedPost, StorageError> {
        if !valid_key(&policy.key) {
            return Err(StorageError::Unknown(anyhow::anyhow!(
                "invalid key {:?}",
                policy.key
            )));
        }
        let expires_at = Utc::now()
            + chrono::Duration::from_std(policy.expires_in)
                .map_err(|e| StorageError::Unknown(e.into()))?;
        let local = LocalPolicy {
            key: policy.key.clone(),
            content_type: policy.content_type.clone(),
            min: policy.min_bytes,
            max: policy.max_bytes,
            expires: expires_at.timestamp(),
        };
        let json = serde_json::to_string(&local).map_err(|e| StorageError::Unknown(e.into()))?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(json);
        let signature = self.sign(&format!("post\n{encoded}"));
        Ok(PresignedPost {
            url: format!("{}/storage/upload", self.inner.base_url),
            fields: BTreeMap::from([
                ("key".to_owned(), policy.key.clone()),
                ("Content-Type".to_owned(), policy.content_type.clone()),
                ("policy".to_owned(), encoded),
                ("x-amz-signature".to_owned(), signature),
            ]),
            expires_at,
        })
    }

    fn read_url(&self, key: &str, expires_in: Duration) -> Result<String, StorageError> {
        if !valid_key(key) {
            return Err(StorageError::Unknown(anyhow::anyhow!(
                "invalid key {key:?}"
            )));
        }
        if let Some(url) = self.public_url(key) {
            return Ok(url);
        }
        let expires =
            Utc::now().timestamp() + i64::try_from(expires_in.as_secs()).unwrap_or(i64::MAX / 2);
        let signature = self.sign(&format!("get\n{key}\n{expires}"));
        Ok(format!(
            "{}/storage/o/{key}?expires={expires}&signature={signature}",
            self.inner.base_url
        ))
    }

    fn public_url(&self, key: &str) -> Option<String> {
        let base = self.inner.public_base.as_ref()?;
        valid_key(key).then(|| format!("{base}/{key}"))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        if !valid_key(key) {
            return Ok(None);
        }
        match tokio::fs::metadata(self.object_path(key)).await {
            Ok(meta) => Ok(Some(ObjectInfo {
                size: meta.len(),
                content_type: tokio::fs::read_to_string(self.type_path(key)).await.ok(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(storage_error(e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        if !valid_key(key) {
            return Ok(());
        }
        remove_file(&self.object_path(key))
            .await
            .map_err(storage_error)?;
        remove_file(&self.type_path(key))
            .await
            .map_err(storage_error)
    }

    async fn copy(&self, from: &str, to: &str) -> Result<bool, StorageError> {
        if !valid_key(from) || !valid_key(to) {
            return Err(StorageError::Unknown(anyhow::anyhow!(
                "invalid key {from:?} or {to:?}"
            )));
        }
        let (object, content_type) = match self.read(from).await.map_err(storage_error)? {
            Some(found) => found,
            None => return Ok(false),
        };
        // Written whole under a temporary name, then renamed into place:
        // the copy is what `from` held when it was read.
        let store = self.clone();
        let to = to.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut staged = store.stage(&to)?;
            staged.write(&object)?;
            staged.commit(&content_type)
        })
        .await
        .map_err(|e| StorageError::Unknown(e.into()))?
        .map_err(storage_error)?;
        Ok(true)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StorageError> {
        let dir = prefix.strip_suffix('/').unwrap_or_default();
        if !valid_key(dir) {
            return Err(StorageError::Unknown(anyhow::anyhow!(
                "delete_prefix needs a prefix ending in '/', got {prefix:?}"
            )));
        }
        let objects = self.inner.root.join("objects").join(dir);
        let n = count_files(&objects).await.map_err(storage_error)?;
        remove_dir(&objects).await.map_err(storage_error)?;
        remove_dir(&self.inner.root.join("types").join(dir))
            .await
            .map_err(storage_error)?;
        Ok(n)
    }
}

/// An S3-style error answer.
fn refuse(status: actix_web::http::StatusCode, code: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/xml")
        .body(format!("<Error><Code>{code}</Code></Error>"))
}

/// RFC 2046 §5.1.1: a boundary is 1 to 70 of these characters (a space
/// only inside).
fn valid_boundary(b: &str) -> bool {
    (1..=70).contains(&b.len())
        && !b.ends_with(' ')
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&c))
}

fn boundary(req: &HttpRequest) -> Option<String> {
    let ct = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    multer::parse_boundary(ct)
        .ok()
        .filter(|b| valid_boundary(b))
}

/// The most bytes a form field other than the file may hold (the policy,
/// its signature, the key and the content type are far shorter).
const MAX_FIELD_BYTES: u64 = 16 * 1024;
/// Fields before the file (S3's form has five or six).
const MAX_FIELDS: usize = 32;

/// Why a form was refused: the S3 error code and its status.
type Refusal = (actix_web::http::StatusCode, &'static str);

fn malformed(e: &multer::Error) -> Refusal {
    use actix_web::http::StatusCode;
    match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            (StatusCode::BAD_REQUEST, "EntityTooLarge")
        }
        _ => (StatusCode::BAD_REQUEST, "MalformedPOSTRequest"),
    }
}

/// Reads a form and stores its file, on a blocking thread (never on an
/// async worker): the fields before the file, then the policy and its
/// signature are checked, and only then is the file read, in chunks, to a
/// temporary file, never more than the policy allows. multer finds the
/// boundary in linear time.
fn receive_form(
    store: &FsStore,
    boundary: String,
    body: impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static,
) -> Result<(), Refusal> {
    use actix_web::http::StatusCode;
    futures_executor::block_on(async move {
        let limits = multer::SizeLimit::new()
            .whole_stream(MAX_FORM_BYTES as u64)
            .per_field(MAX_FIELD_BYTES)
            .for_field("file", MAX_FORM_BYTES as u64);
        let mut form = multer::Multipart::with_constraints(
            body,
            boundary,
            multer::Constraints::new().size_limit(limits),
        );
        let mut fields = BTreeMap::new();
        let mut file = loop {
            let Some(field) = form.next_field().await.map_err(|e| malformed(&e))? else {
                return Err((StatusCode::BAD_REQUEST, "InvalidArgument"));
            };
            let name = field.name().unwrap_or_default().to_owned();
            if name == "file" {
                break field; // S3 ignores what follows the file
            }
            if fields.len() >= MAX_FIELDS {
                return Err((StatusCode::BAD_REQUEST, "MalformedPOSTRequest"));
            }
            let value = field.text().await.map_err(|e| malformed(&e))?;
            fields.insert(name, value);
        };
        let (Some(encoded), Some(signature)) =
            (fields.get("policy"), fields.get("x-amz-signature"))
        else {
            return Err((StatusCode::BAD_REQUEST, "InvalidArgument"));
        };
        if !store.verify(&format!("post\n{encoded}"), signature) {
            return Err((StatusCode::FORBIDDEN, "SignatureDoesNotMatch"));
        }
        let Some(policy) = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|json| serde_json::from_slice::<LocalPolicy>(&json).ok())
        else {
            return Err((StatusCode::BAD_REQUEST, "InvalidPolicyDocument"));
        };
        if Utc::now().timestamp() > policy.expires {
            return Err((StatusCode::FORBIDDEN, "AccessDenied"));
        }
        if fields.get("key") != Some(&policy.key)
            || fields.get("Content-Type") != Some(&policy.content_type)
            || !valid_key(&policy.key)
        {
            return Err((StatusCode::FORBIDDEN, "AccessDenied"));
        }
        let unavailable = |e: std::io::Error| {
            tracing::error!(error = %e, "cannot store an uploaded object");
            (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
        };
        let mut staged = store.stage(&policy.key).map_err(unavailable)?;
        let mut size = 0u64;
        while let Some(chunk) = file.chunk().await.map_err(|e| malformed(&e))? {
            size += chunk.len() as u64;
            if size > policy.max {
                return Err((StatusCode::BAD_REQUEST, "EntityTooLarge"));
            }
            staged.write(&chunk).map_err(unavailable)?;
        }
        if size < policy.min {
            return Err((StatusCode::BAD_REQUEST, "EntityTooSmall"));
        }
        staged.commit(&policy.content_type).map_err(unavailable)
    })
}

async fn upload(
    store: web::Data<FsStore>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    use futures_util::StreamExt as _;
    let Some(boundary) = boundary(&req) else {
        return refuse(
            actix_web::http::StatusCode::BAD_REQUEST,
            "MalformedPOSTRequest",
        );
    };
    // The actix worker only hands the body's chunks over (a few at a
    // time); the form is parsed and written on a blocking thread.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let store = store.get_ref().clone();
    let parse = tokio::task::spawn_blocking(move || receive_form(&store, boundary, body));
    let forward = async move {
        let mut payload = payload;
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| std::io::Error::other(e.to_string()));
            let failed = chunk.is_err();
            // The parser stopped (it refused the form, or has the file):
            // nothing more is read.
            if tx.send(chunk).await.is_err() || failed {
                break;
            }
        }
    };
    let ((), parsed) = tokio::join!(forward, parse);
    match parsed {
        Ok(Ok(())) => HttpResponse::NoContent().finish(),
        Ok(Err((status, code))) => refuse(status, code),
        Err(e) => {
            tracing::error!(error = %e, "the upload form's parser failed");
            refuse(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
            )
        }
    }
}

#[derive(Debug, Deserialize)]
struct ReadQuery {
    expires: i64,
    signature: String,
}

async fn read(
    store: web::Data<FsStore>,
    key: web::Path<String>,
    query: web::Query<ReadQuery>,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    let key = key.into_inner();
    if !valid_key(&key)
        || Utc::now().timestamp() > query.expires
        || !store.verify(&format!("get\n{key}\n{}", query.expires), &query.signature)
    {
        return refuse(StatusCode::FORBIDDEN, "AccessDenied");
    }
    match store.read(&key).await {
        Ok(Some((bytes, content_type))) => HttpResponse::Ok()
            .content_type(content_type)
            // User content on the app's own origin: never sniffed, never
            // run as a page.
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .insert_header((header::CONTENT_SECURITY_POLICY, "sandbox"))
            .insert_header((header::CACHE_CONTROL, "private, max-age=300"))
            .body(bytes),
        Ok(None) => refuse(StatusCode::NOT_FOUND, "NoSuchKey"),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a stored object");
            refuse(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
        }
    }
}

/// Mounts `POST /storage/upload` and `GET /storage/o/{key}` for `store`.
pub fn configure(store: FsStore) -> impl Fn(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        cfg.service(
            web::scope("/storage")
                .app_data(web::Data::new(store.clone()))
                .app_data(web::PayloadConfig::new(MAX_FORM_BYTES))
                .route("/upload", web::post().to(upload))
                .route("/o/{key:.*}", web::get().to(read)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_leave_the_root() {
        assert!(valid_key("users/1/2"));
        for bad in [
            "", "/a", "a//b", "../a", "a/../b", "a/./b", "a b", "a\\b", "a/",
        ] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn boundaries_follow_rfc_2046() {
        assert!(valid_boundary("XyZ"));
        assert!(valid_boundary(&"a".repeat(70)));
        assert!(valid_boundary("----WebKitFormBoundary7MA4YWxkTrZu0gW"));
        for bad in ["", "a ", "a\"b", "a;b", "\u{e9}"] {
            assert!(!valid_boundary(bad), "{bad:?}");
        }
        assert!(!valid_boundary(&"a".repeat(71)));
        assert!(!valid_boundary(&"-".repeat(100_000)));
    }
}

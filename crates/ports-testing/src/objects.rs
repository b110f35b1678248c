//! An in-memory object store that enforces its POST policies like S3, and
//! the client the object store contract uploads and reads with.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ports::storage::{ObjectInfo, ObjectStore, PostPolicy, PresignedPost, StorageError};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// What a client of an object store does with what the store presigned:
/// post the form with a file, fetch a read link. The contract suite uses
/// it; each adapter's tests supply one over real HTTP.
#[async_trait]
pub trait ObjectClient: Send + Sync {
    /// Posts `form` as multipart form data, the file last; answers the
    /// HTTP status (2xx: stored).
    async fn post_form(&self, form: &PresignedPost, file: Vec<u8>) -> u16;
    /// Fetches `url`; `None` unless it answered 200.
    async fn get(&self, url: &str) -> Option<Vec<u8>>;
}

#[derive(Debug, Clone)]
struct Stored {
    bytes: Vec<u8>,
    content_type: String,
}

#[derive(Debug, Clone)]
struct Issued {
    policy: PostPolicy,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, Stored>,
    /// Forms handed out, by their `signature` field.
    issued: BTreeMap<String, Issued>,
    next: u64,
}

/// Objects in a map; forms are remembered by an opaque signature and the
/// policy they were issued for is enforced on post.
#[derive(Debug, Default)]
pub struct InMemoryObjectStore {
    state: Mutex<State>,
}

impl InMemoryObjectStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores an object directly (what a client's upload would do).
    pub fn put(&self, key: &str, content_type: &str, bytes: Vec<u8>) {
        self.lock().objects.insert(
            key.to_owned(),
            Stored {
                bytes,
                content_type: content_type.to_owned(),
            },
        );
    }

    pub fn keys(&self) -> Vec<String> {
        self.lock().objects.keys().cloned().collect()
    }
}

const READ_PREFIX: &str = "memory://objects/";

#[async_trait]
impl ObjectStore for InMemoryObjectStore {
    fn presign_post(&self, policy: &PostPolicy) -> Result<PresignedPost, StorageError> {
        let mut s = self.lock();
        s.next += 1;
        let signature = format!("sig-{}", s.next);
        let expires_at = Utc::now()
            + chrono::Duration::from_std(policy.expires_in)
                .map_err(|e| StorageError::Unknown(e.into()))?;
        s.issued.insert(
            signature.clone(),
            Issued {
                policy: policy.clone(),
                expires_at,
            },
        );
        let fields = BTreeMap::from([
            ("key".to_owned(), policy.key.clone()),
            ("Content-Type".to_owned(), policy.content_type.clone()),
            ("signature".to_owned(), signature),
        ]);
        Ok(PresignedPost {
            url: "memory://upload".into(),
            fields,
            expires_at,
        })
    }

    fn read_url(&self, key: &str, _expires_in: Duration) -> Result<String, StorageError> {
        Ok(format!("{READ_PREFIX}{key}"))
    }

    fn public_url(&self, _key: &str) -> Option<String> {
        None
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        Ok(self.lock().objects.get(key).map(|o| ObjectInfo {
            size: o.bytes.len() as u64,
            content_type: Some(o.content_type.clone()),
        }))
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.lock().objects.remove(key);
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StorageError> {
        let mut s = self.lock();
        let before = s.objects.len();
        s.objects.retain(|k, _| !k.starts_with(prefix));
        Ok((before - s.objects.len()) as u64)
    }

    async fn copy(&self, from: &str, to: &str) -> Result<bool, StorageError> {
        let mut s = self.lock();
        let Some(object) = s.objects.get(from).cloned() else {
            return Ok(false);
        };
        s.objects.insert(to.to_owned(), object);
        Ok(true)
    }
}

#[async_trait]
impl ObjectClient for InMemoryObjectStore {
    async fn post_form(&self, form: &PresignedPost, file: Vec<u8>) -> u16 {
        let mut s = self.lock();
        let field = |name: &str| form.fields.get(name).cloned().unwrap_or_default();
        let Some(issued) = s.issued.get(&field("signature")).cloned() else {
            return 403;
        };
        let p = &issued.policy;
        if Utc::now() > issued.expires_at
            || field("key") != p.key
            || field("Content-Type") != p.content_type
        {
            return 403;
        }
        let size = file.len() as u64;
        if size < p.min_bytes || size > p.max_bytes {
            return 400;
        }
        s.objects.insert(
            p.key.clone(),
            Stored {
                bytes: file,
                content_type: p.content_type.clone(),
            },
        );
        204
    }

    async fn get(&self, url: &str) -> Option<Vec<u8>> {
        let key = url.strip_prefix(READ_PREFIX)?;
        self.lock().objects.get(key).map(|o| o.bytes.clone())
    }
}

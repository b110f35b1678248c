//! Object storage for uploads: an S3-compatible bucket, or without one a
//! directory the app serves itself (local development).

use super::reader::Reader;
use secrecy::SecretString;
use std::path::PathBuf;

pub(crate) const VARIABLES: &[&str] = &[
    "STORAGE_BUCKET",
    "STORAGE_ENDPOINT",
    "STORAGE_REGION",
    "STORAGE_PUBLIC_BASE_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "STORAGE_LOCAL_DIR",
    "STORAGE_LOCAL_BASE_URL",
    "UPLOAD_QUOTA_FILES",
    "UPLOAD_QUOTA_BYTES",
];

#[derive(Clone)]
pub struct StorageSection {
    /// `None`: the file-system store under `local_dir`.
    pub bucket: Option<String>,
    pub endpoint: Option<String>,
    pub region: String,
    pub public_base_url: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
    /// Where the file-system store keeps objects (default `var/storage`).
    pub local_dir: PathBuf,
    /// How clients reach this app for the file-system store's forms and
    /// links; `None`: `http://localhost:<HTTP_PORT>`.
    pub local_base_url: Option<String>,
    /// Completed files one user may keep, and their bytes.
    pub quota_files: u32,
    pub quota_bytes: u64,
}

impl std::fmt::Debug for StorageSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageSection")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl StorageSection {
    pub(crate) fn read(r: &mut Reader<'_>) -> Self {
        let non_empty =
            |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let bucket = non_empty(r.raw("STORAGE_BUCKET"));
        let endpoint = non_empty(r.raw("STORAGE_ENDPOINT"))
            .map(|_| r.url("STORAGE_ENDPOINT", "", &["http", "https"]));
        let public_base_url = non_empty(r.raw("STORAGE_PUBLIC_BASE_URL"))
            .map(|_| r.url("STORAGE_PUBLIC_BASE_URL", "", &["http", "https"]));
        let local_base_url = non_empty(r.raw("STORAGE_LOCAL_BASE_URL"))
            .map(|_| r.url("STORAGE_LOCAL_BASE_URL", "", &["http", "https"]));
        let access_key_id = non_empty(r.raw("AWS_ACCESS_KEY_ID"));
        let secret_access_key = non_empty(r.raw("AWS_SECRET_ACCESS_KEY")).map(SecretString::from);
        if bucket.is_some() && (access_key_id.is_none() || secret_access_key.is_none()) {
            r.problem(
                "STORAGE_BUCKET",
                "is set, so AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be too",
            );
        }
        let defaults = usecases::UploadSettings::default();
        let quota_files = r.ranged(
            "UPLOAD_QUOTA_FILES",
            defaults.max_files,
            1,
            10_000_000,
            "files",
        );
        let quota_bytes = r.ranged(
            "UPLOAD_QUOTA_BYTES",
            defaults.max_bytes,
            1024,
            1 << 50,
            "bytes",
        );
        Self {
            quota_files,
            quota_bytes,
            bucket,
            endpoint,
            region: r.string("STORAGE_REGION", "us-east-1"),
            public_base_url,
            access_key_id,
            secret_access_key,
            local_dir: PathBuf::from(r.string("STORAGE_LOCAL_DIR", "var/storage")),
            local_base_url,
        }
    }

    /// The upload flow's settings (quotas from here, the rest defaults).
    pub fn upload_settings(&self) -> usecases::UploadSettings {
        usecases::UploadSettings {
            max_files: self.quota_files,
            max_bytes: self.quota_bytes,
            ..usecases::UploadSettings::default()
        }
    }

    pub fn storage_settings(&self) -> storage_adapter::StorageSettings {
        storage_adapter::StorageSettings {
            bucket: self.bucket.clone(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            public_base_url: self.public_base_url.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            ..storage_adapter::StorageSettings::new()
        }
    }
}

//! Which adapter goes behind which port, from settings: the token
//! verifier, push, identity administration and object storage.

use crate::settings::{AppEnv, Settings};
use anyhow::Context as _;
use auth_adapter::FirebaseTokenVerifier;
use ports::TokenVerifier;
use secrecy::ExposeSecret as _;
use std::sync::Arc;
use std::time::Duration;
use streams_adapter::RedisClient;

/// The Firebase ID token verifier (with the local-only ways in when local).
pub(crate) fn token_verifier(settings: &Settings) -> anyhow::Result<Arc<dyn TokenVerifier>> {
    let auth = settings.auth.auth_settings(settings.env);
    if auth.emulator {
        tracing::warn!(
            host = settings
                .auth
                .firebase_auth_emulator_host
                .as_deref()
                .unwrap_or_default(),
            "FIREBASE_AUTH_EMULATOR_HOST is set: UNSIGNED emulator tokens are accepted. Never do this in production."
        );
    }
    if auth.dev_secret.is_some() {
        tracing::warn!(
            "local mode (APP_ENV=local): dev tokens from `app dev-token` are accepted; set APP_ENV=production on any server others can reach"
        );
    }
    Ok(Arc::new(FirebaseTokenVerifier::new(auth)?))
}

/// FCM when `GOOGLE_APPLICATION_CREDENTIALS` names a service-account key;
/// otherwise a sender that only logs (and says so).
pub(super) fn push_sender(settings: &Settings) -> anyhow::Result<Arc<dyn ports::PushSender>> {
    let Some(sender) = fcm_sender(settings)? else {
        tracing::warn!(
            "push notifications are LOGGED, NOT SENT: set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file to send through FCM"
        );
        return Ok(Arc::new(push_adapter::LogPushSender::new()));
    };
    tracing::info!(to = %sender.describe(), "push notifications ready");
    Ok(Arc::new(sender))
}

/// Redis with a `maxmemory-policy` other than `noeviction` drops keys when
/// memory runs out, queued jobs and stream entries among them, without an
/// error: said loudly at startup (in the background: Redis may not be up
/// yet), and a failure of `app doctor`.
pub(super) fn warn_if_redis_evicts(fred: &RedisClient) {
    let fred = fred.clone();
    tokio::spawn(async move {
        let asked = tokio::time::timeout(
            Duration::from_secs(30),
            streams_adapter::inspect::server(&fred),
        )
        .await;
        if let Ok(Ok(server)) = asked
            && server.evicts()
        {
            tracing::warn!(
                maxmemory_policy = %server.maxmemory_policy,
                "REDIS MAY EVICT QUEUED JOBS AND STREAM ENTRIES: its maxmemory-policy is {}; set it to noeviction (several managed Redis offerings default to an LRU policy; `app doctor` fails on it)",
                server.maxmemory_policy
            );
        }
    });
}

/// FCM with the service account of `GOOGLE_APPLICATION_CREDENTIALS`;
/// `None` without one.
pub(crate) fn fcm_sender(settings: &Settings) -> anyhow::Result<Option<push_adapter::FcmSender>> {
    let push = &settings.push;
    let Some(path) = &push.google_application_credentials else {
        return Ok(None);
    };
    let key = push_adapter::ServiceAccountKey::from_file(path)
        .context("GOOGLE_APPLICATION_CREDENTIALS")?;
    let project = push
        .fcm_project_id
        .clone()
        .or_else(|| key.project_id.clone())
        .unwrap_or_else(|| settings.auth.firebase_project_id.clone());
    Ok(Some(push_adapter::FcmSender::new(
        &key,
        push.fcm_settings(project),
    )?))
}

/// What deletes Firebase Auth accounts: the emulator when
/// `FIREBASE_AUTH_EMULATOR_HOST` is set, else the Identity Toolkit with the
/// service account of `GOOGLE_APPLICATION_CREDENTIALS`; `None` without
/// either (deleted accounts then keep their Firebase user, and say so).
pub(crate) fn identity_admin(
    settings: &Settings,
) -> anyhow::Result<Option<Arc<dyn ports::IdentityAdmin>>> {
    let project = &settings.auth.firebase_project_id;
    if let Some(host) = &settings.auth.firebase_auth_emulator_host
        && settings.env == AppEnv::Local
    {
        return Ok(Some(Arc::new(push_adapter::FirebaseUserAdmin::emulator(
            host, project,
        )?)));
    }
    let Some(path) = &settings.push.google_application_credentials else {
        tracing::warn!(
            "deleted accounts keep their Firebase Auth user: set GOOGLE_APPLICATION_CREDENTIALS to a service-account key that may delete users"
        );
        return Ok(None);
    };
    let key = push_adapter::ServiceAccountKey::from_file(path)
        .context("GOOGLE_APPLICATION_CREDENTIALS")?;
    Ok(Some(Arc::new(push_adapter::FirebaseUserAdmin::new(
        &key,
        project,
        &settings.auth.identity_toolkit_url,
        settings.push.fcm_token_url.clone(),
    )?)))
}

/// The object store: the bucket when `STORAGE_BUCKET` is set, else the
/// local directory, whose forms and links the API serves under `/storage`
/// (returned too, to be mounted) at `port`.
pub(crate) fn object_store(
    settings: &Settings,
    port: u16,
) -> anyhow::Result<(
    Arc<dyn ports::ObjectStore>,
    Option<storage_adapter::FsStore>,
)> {
    let storage = &settings.storage;
    if let Some(bucket) = &storage.bucket {
        let store = storage_adapter::S3Store::new(&storage.storage_settings(), bucket)?;
        return Ok((Arc::new(store), None));
    }
    let base = storage
        .local_base_url
        .clone()
        .unwrap_or_else(|| format!("http://localhost:{port}"));
    let store = storage_adapter::FsStore::new(
        &storage.local_dir,
        &base,
        settings.http.cursor_secret.expose_secret().as_bytes(),
    )
    .with_public_base(storage.public_base_url.clone());
    Ok((Arc::new(store.clone()), Some(store)))
}

//! Push notifications through FCM: the service-account key, and where FCM
//! and its OAuth2 endpoint are (tests point them at a local server).

use super::AppEnv;
use super::auth::secure_schemes;
use super::reader::Reader;
use std::path::PathBuf;

pub(crate) const VARIABLES: &[&str] = &[
    "GOOGLE_APPLICATION_CREDENTIALS",
    "FCM_PROJECT_ID",
    "FCM_BASE_URL",
    "FCM_TOKEN_URL",
];

#[derive(Debug, Clone)]
pub struct PushSection {
    /// The service-account key file; `None`: pushes are only logged.
    pub google_application_credentials: Option<PathBuf>,
    /// FCM HTTP v1's base URL.
    pub fcm_base_url: String,
    /// The OAuth2 token endpoint; `None`: the key file's `token_uri`.
    pub fcm_token_url: Option<String>,
    /// The project FCM messages go out as; `None`: the key file's
    /// `project_id`, then `FIREBASE_PROJECT_ID`.
    pub fcm_project_id: Option<String>,
}

impl PushSection {
    pub(crate) fn read(r: &mut Reader<'_>, env: AppEnv) -> Self {
        let google_application_credentials =
            r.raw("GOOGLE_APPLICATION_CREDENTIALS").map(PathBuf::from);
        // The service-account assertion and every push travel to these:
        // over plain HTTP they could be read or answered by anyone on the
        // way, so production takes https only (like FIREBASE_KEYS_URL).
        let fcm_base_url = r.url(
            "FCM_BASE_URL",
            "https://fcm.googleapis.com",
            secure_schemes(env),
        );
        let fcm_token_url = r
            .raw("FCM_TOKEN_URL")
            .map(|_| r.url("FCM_TOKEN_URL", "", secure_schemes(env)));
        let fcm_project_id = r.raw("FCM_PROJECT_ID").map(|p| p.trim().to_owned());
        Self {
            google_application_credentials,
            fcm_base_url,
            fcm_token_url,
            fcm_project_id,
        }
    }

    /// What the FCM sender takes, for `project`.
    pub fn fcm_settings(&self, project: String) -> push_adapter::FcmSettings {
        push_adapter::FcmSettings {
            base_url: self.fcm_base_url.clone(),
            token_url: self.fcm_token_url.clone(),
            ..push_adapter::FcmSettings::new(project)
        }
    }
}

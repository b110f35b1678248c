#![doc = include_str!("../README.md")]

mod body;
mod credentials;
mod fcm;
mod firebase_admin;
mod log_sender;
mod message;
mod oauth;

pub use credentials::{GOOGLE_TOKEN_URL, ServiceAccountKey};
pub use fcm::{FCM_BASE_URL, FcmSender, FcmSettings};
pub use firebase_admin::{FirebaseUserAdmin, IDENTITY_TOOLKIT_URL};
pub use log_sender::LogPushSender;
pub use message::fcm_message;
pub use oauth::{FCM_SCOPE, IDENTITY_SCOPE};

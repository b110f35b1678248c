#![doc = include_str!("../README.md")]

mod credentials;
mod fcm;
mod log_sender;
mod message;
mod oauth;

pub use credentials::{GOOGLE_TOKEN_URL, ServiceAccountKey};
pub use fcm::{FCM_BASE_URL, FcmSender, FcmSettings};
pub use log_sender::LogPushSender;
pub use message::fcm_message;
pub use oauth::FCM_SCOPE;

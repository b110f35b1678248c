#![doc = include_str!("../README.md")]

pub mod profiles;
pub mod push_tokens;

pub use profiles::{DeleteAccountError, GetProfileError, ProfileService};
pub use push_tokens::{ListPushTokensError, PushTokenService};

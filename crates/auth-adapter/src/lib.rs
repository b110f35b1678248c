#![doc = include_str!("../README.md")]

mod cache;
mod claims;
mod dev;
mod jwt;
mod keys;
mod verifier;

pub use claims::{FirebaseClaims, FirebaseInfo};
pub use dev::{DEV_KEY_ID, DevTokenRequest, mint_dev_token};
pub use keys::KeySettings;
pub use verifier::{AuthSettings, FirebaseTokenVerifier, MAX_TOKEN_BYTES};

#![doc = include_str!("../README.md")]

pub mod profiles;
pub mod push_tokens;
pub mod relay;
pub mod welcome;

pub use profiles::{DeleteAccountError, GetProfileError, PROFILE_UPDATED, ProfileService};
pub use push_tokens::{ListPushTokensError, PushTokenService};
pub use relay::{OutboxRelay, RelayError, RelayPass, RelaySettings};
pub use welcome::{
    MAIL_QUEUE, SendWelcomeMail, WELCOME_GROUP, WELCOME_JOB, WelcomeMailJob, WelcomeMailTrigger,
};

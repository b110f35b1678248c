//! The HTTP API end to end in-process, against the `ports_testing` fakes,
//! one module per behaviour.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod app_version;
mod docs;
mod edge;
mod health;
mod helpers;
mod me;
mod push_tokens;
mod rate_limits;
mod uploads;

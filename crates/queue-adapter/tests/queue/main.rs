//! The job queue and worker runtime against a real Redis, one module per
//! feature.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod controls;
mod dead;
mod helpers;
mod leases;
mod operator;
mod retries;
mod running;
mod scheduling;
mod unique;
mod upgrade;

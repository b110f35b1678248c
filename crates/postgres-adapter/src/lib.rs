#![doc = include_str!("../README.md")]

pub mod connect;
mod error;
#[macro_use]
mod session;
mod health;
mod inspect;
mod outbox;
mod pool;
mod push_tokens;
mod rows;
mod schema;
#[macro_use]
mod shared;
mod support;
mod uploads;
mod users;
mod welcome;

pub use connect::{PgTarget, PgTls, Roots, SslMode, connect, parse_target};
pub use health::PgHealthProbe;
pub use inspect::{PgInspection, PgServer, inspect, pending_migrations};
pub use outbox::{OUTBOX_CHANNEL, PgOutbox};
pub use pool::{
    MIGRATIONS, PgPool, PgSettings, build_pool, create_database_if_missing, revert_all_migrations,
    revert_last_migration, run_migrations,
};
pub use push_tokens::PgPushTokenRepository;
pub use support::PgSupport;
pub use uploads::PgUploadRepository;
pub use users::PgUserRepository;
pub use welcome::PgWelcomeLedger;

//! The Postgres adapters pass the same contract suites as the in-memory fakes.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use ports::testing::contract::users::UserStore;
use ports::{Outbox, PushTokenRepository, UserRepository};
use postgres_adapter::{PgOutbox, PgPushTokenRepository, PgSettings, PgUserRepository, build_pool};
use std::sync::Arc;
use test_support::TestDb;

/// The three Postgres adapters over one test schema (kept alive with them).
struct PgStore {
    users: PgUserRepository,
    tokens: PgPushTokenRepository,
    outbox: PgOutbox,
    _db: TestDb,
}

impl UserStore for PgStore {
    fn users(&self) -> &dyn UserRepository {
        &self.users
    }
    fn tokens(&self) -> &dyn PushTokenRepository {
        &self.tokens
    }
    fn outbox(&self) -> &dyn Outbox {
        &self.outbox
    }
}

async fn store() -> Arc<PgStore> {
    let db = TestDb::new().await;
    let pool = build_pool(&PgSettings::new(db.url())).unwrap();
    Arc::new(PgStore {
        users: PgUserRepository::new(pool.clone()),
        tokens: PgPushTokenRepository::new(pool.clone()),
        outbox: PgOutbox::new(pool, db.url()),
        _db: db,
    })
}

mod user_store {
    use super::store;
    ports::user_store_contract!(store());
}

mod outbox {
    use super::store;
    ports::outbox_contract!(store());
}

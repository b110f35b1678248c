//! The Postgres adapters pass the same contract suites as the in-memory fakes.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use ports::{Outbox, PushTokenRepository, UserRepository};
use ports_testing::contract::users::UserStore;
use postgres_adapter::{PgOutbox, PgPushTokenRepository, PgSettings, PgUserRepository, build_pool};
use std::sync::Arc;
use test_support::TestDb;

/// The three Postgres adapters over one test schema (kept alive with them).
struct PgStore {
    users: PgUserRepository,
    tokens: PgPushTokenRepository,
    outbox: PgOutbox,
    /// What the store's database lives on (a test schema; or a pooler and
    /// a database of its own), dropped after the adapters.
    _db: Box<dyn std::any::Any + Send + Sync>,
}

impl PgStore {
    /// The test schema under a store made by `make`.
    fn test_db(&self) -> &TestDb {
        self._db.downcast_ref::<TestDb>().unwrap()
    }
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
    make(false).await
}

/// The same store, its lookups on shared pipelined connections.
async fn pipelined_store() -> Arc<PgStore> {
    make(true).await
}

async fn make(pipelined: bool) -> Arc<PgStore> {
    let db = TestDb::new().await;
    let settings = PgSettings::new(db.url());
    let pool = build_pool(&settings).unwrap();
    let users = PgUserRepository::new(pool.clone());
    let users = if pipelined {
        users.with_pipelined_reads(&settings, 2)
    } else {
        users
    };
    Arc::new(PgStore {
        users,
        tokens: PgPushTokenRepository::new(pool.clone()),
        outbox: PgOutbox::new(pool, db.url()),
        _db: Box::new(db),
    })
}

/// The store through PgBouncer in transaction mode (a database of its own:
/// the pooler drops the per-test schema's startup option), its sessions
/// (the relay's leadership and LISTEN, the migrations) on the direct
/// endpoint.
async fn pooled_store() -> Arc<PgStore> {
    let db = test_support::PooledDatabase::new(4).await;
    let settings = PgSettings {
        through_pooler: true,
        ..PgSettings::new(db.url())
    };
    let pool = build_pool(&settings).unwrap();
    Arc::new(PgStore {
        users: PgUserRepository::new(pool.clone()).with_pipelined_reads(&settings, 2),
        tokens: PgPushTokenRepository::new(pool.clone()),
        outbox: PgOutbox::new(pool, db.direct_url()),
        _db: Box::new(db),
    })
}

mod user_store_through_a_transaction_pooler {
    use super::pooled_store;
    ports_testing::user_store_contract!(pooled_store());
}

mod outbox_through_a_transaction_pooler {
    use super::pooled_store;
    ports_testing::outbox_contract!(pooled_store());
}

/// The pooler in these tests really is one: a pool that does not know it
/// is behind one (prepared statements outside transactions, a session
/// timeout) fails there under concurrent use.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_unaware_of_the_transaction_pooler_breaks_through_it() {
    let db = test_support::PooledDatabase::new(2).await;
    let through = |pooler: bool| {
        let pool = build_pool(&PgSettings {
            max_connections: 8,
            through_pooler: pooler,
            ..PgSettings::new(db.url())
        })
        .unwrap();
        PgUserRepository::new(pool)
    };
    let failures = |users: PgUserRepository| async move {
        let calls = (0..64).map(|i| {
            let users = users.clone();
            async move {
                let uid = domain::FirebaseUid::parse(&format!("u-{}", i % 8)).unwrap();
                users.find_by_uid(&uid).await.is_err()
            }
        });
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .filter(|failed| *failed)
            .count()
    };
    assert!(
        failures(through(false)).await > 0,
        "PgBouncer in transaction mode let named prepared statements through"
    );
    assert_eq!(failures(through(true)).await, 0);
}

mod user_store {
    use super::store;
    ports_testing::user_store_contract!(store());
}

mod user_store_with_pipelined_reads {
    use super::pipelined_store;
    ports_testing::user_store_contract!(pipelined_store());
}

mod outbox {
    use super::store;
    ports_testing::outbox_contract!(store());
}

/// The outbox row is written in the user's own transaction: when it cannot
/// be written, the user is not created either (and nothing is half done).
#[tokio::test]
async fn a_user_and_its_event_commit_together_or_not_at_all() {
    let db = TestDb::new().await;
    let pool = build_pool(&PgSettings::new(db.url())).unwrap();
    let users = PgUserRepository::new(pool.clone());
    let tokens = PgPushTokenRepository::new(pool);
    db.execute("ALTER TABLE outbox ADD CONSTRAINT refuse_all CHECK (false) NOT VALID")
        .await;
    let uid = domain::FirebaseUid::parse("u-atomic").unwrap();
    let upsert = users
        .upsert_profile(
            &uid,
            &domain::ProfilePatch::default(),
            &domain::ProfileDefaults::default(),
        )
        .await;
    assert!(upsert.is_err(), "the event could not be written");
    let register = tokens
        .register(
            &uid,
            &domain::PushToken::parse("tok-atomic").unwrap(),
            domain::Platform::Ios,
            &domain::ProfileDefaults::default(),
        )
        .await;
    assert!(register.is_err());
    assert_eq!(db.scalar("SELECT count(*) AS value FROM users").await, 0);
    assert_eq!(
        db.scalar("SELECT count(*) AS value FROM push_tokens").await,
        0
    );
    // Once events can be written again, the same calls succeed.
    db.execute("ALTER TABLE outbox DROP CONSTRAINT refuse_all")
        .await;
    let created = users
        .upsert_profile(
            &uid,
            &domain::ProfilePatch::default(),
            &domain::ProfileDefaults::default(),
        )
        .await
        .unwrap();
    assert_eq!(created.outcome, ports::UpsertOutcome::Created);
    assert_eq!(db.scalar("SELECT count(*) AS value FROM outbox").await, 1);
}

/// The Postgres ledger over a test schema of its own (kept alive with it).
struct PgLedger {
    ledger: postgres_adapter::PgWelcomeLedger,
    _db: TestDb,
}

#[async_trait::async_trait]
impl ports::WelcomeLedger for PgLedger {
    async fn claim(
        &self,
        uid: &domain::FirebaseUid,
        to: &domain::Email,
        holder: ports::SendHolder,
        window: std::time::Duration,
        stale_after: std::time::Duration,
    ) -> Result<ports::ClaimWelcomeOutcome, ports::WelcomeLedgerError> {
        self.ledger
            .claim(uid, to, holder, window, stale_after)
            .await
    }
    async fn mark_sent(
        &self,
        uid: &domain::FirebaseUid,
        holder: ports::SendHolder,
    ) -> Result<(), ports::WelcomeLedgerError> {
        self.ledger.mark_sent(uid, holder).await
    }
    async fn release(
        &self,
        uid: &domain::FirebaseUid,
        holder: ports::SendHolder,
    ) -> Result<(), ports::WelcomeLedgerError> {
        self.ledger.release(uid, holder).await
    }
    async fn forget_recipients(
        &self,
        window: std::time::Duration,
    ) -> Result<u64, ports::WelcomeLedgerError> {
        self.ledger.forget_recipients(window).await
    }
    async fn record(
        &self,
        uid: &domain::FirebaseUid,
    ) -> Result<Option<ports::WelcomeRecord>, ports::WelcomeLedgerError> {
        self.ledger.record(uid).await
    }
}

async fn ledger() -> Arc<PgLedger> {
    let db = TestDb::new().await;
    let pool = build_pool(&PgSettings::new(db.url())).unwrap();
    Arc::new(PgLedger {
        ledger: postgres_adapter::PgWelcomeLedger::new(pool, b"test ledger key"),
        _db: db,
    })
}

mod welcome_ledger {
    use super::ledger;
    ports_testing::welcome_ledger_contract!(ledger());
}

mod outbox_leadership {
    use super::*;

    ports_testing::outbox_leadership_contract!(async {
        let store = make(false).await;
        let url = store.test_db().url().to_owned();
        let pool = build_pool(&PgSettings::new(url.clone())).unwrap();
        let first: Box<dyn Outbox> = Box::new(PgOutbox::new(pool.clone(), url.clone()));
        let second: Box<dyn Outbox> = Box::new(PgOutbox::new(pool, url));
        (store, first, second)
    });
}

#[tokio::test]
async fn a_row_a_newer_version_wrote_is_claimed_as_written_in_its_place() {
    let store = make(false).await;
    let first = domain::FirebaseUid::parse("before").unwrap();
    store
        .users
        .upsert_profile(
            &first,
            &domain::ProfilePatch::default(),
            &domain::ProfileDefaults::default(),
        )
        .await
        .unwrap();
    store
        .test_db()
        .execute(
            "INSERT INTO outbox (event_id, topic, event_type, payload) \
             VALUES (gen_random_uuid(), 'users', 'user.future', '{\"from\": \"v9\"}')",
        )
        .await;
    let second = domain::FirebaseUid::parse("after").unwrap();
    store
        .users
        .upsert_profile(
            &second,
            &domain::ProfilePatch::default(),
            &domain::ProfileDefaults::default(),
        )
        .await
        .unwrap();
    let rows = store
        .outbox
        .claim(10, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let types: Vec<&str> = rows.iter().map(|r| r.event.event_type.as_str()).collect();
    assert_eq!(types, ["user.created", "user.future", "user.created"]);
    assert_eq!(rows[1].event.payload, serde_json::json!({"from": "v9"}));
    assert!(
        rows[1].event.decode().is_err(),
        "this version cannot decode it"
    );
}

mod upload_repository {
    use super::*;
    use ports_testing::contract::storage::UploadsUnderTest;

    ports_testing::upload_repository_contract!(async {
        let db = TestDb::new().await;
        let pool = build_pool(&PgSettings::new(db.url())).unwrap();
        UploadsUnderTest {
            uploads: Arc::new(postgres_adapter::PgUploadRepository::new(pool.clone())),
            users: Arc::new(PgUserRepository::new(pool)),
            guard: Box::new(db),
        }
    });
}

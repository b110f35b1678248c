//! Every migration goes up, down and up again.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use postgres_adapter::{
    PgSettings, PgWelcomeLedger, build_pool, revert_all_migrations, revert_last_migration,
    run_migrations,
};
use test_support::TestDb;

#[derive(diesel::QueryableByName)]
struct Table {
    #[diesel(sql_type = diesel::sql_types::Text)]
    table_name: String,
}

async fn tables(db: &TestDb) -> Vec<String> {
    let mut conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    let mut names: Vec<String> = diesel::sql_query(format!(
        "SELECT table_name::text AS table_name FROM information_schema.tables WHERE table_schema = '{}'",
        db.schema()
    ))
    .load::<Table>(&mut conn)
    .await
    .unwrap()
    .into_iter()
    .map(|t| t.table_name)
    .filter(|t| t != "__diesel_schema_migrations")
    .collect();
    names.sort();
    names
}

#[tokio::test]
async fn migrations_go_up_down_and_up_again() {
    let db = TestDb::empty().await;
    let applied = run_migrations(db.url()).await.unwrap();
    assert!(!applied.is_empty());
    assert_eq!(
        tables(&db).await,
        [
            "account_deletions",
            "outbox",
            "push_tokens",
            "uploads",
            "users",
            "welcome_mails"
        ]
    );

    let reverted = revert_all_migrations(db.url()).await.unwrap();
    assert_eq!(reverted.len(), applied.len());
    assert!(
        tables(&db).await.is_empty(),
        "down.sql leaves nothing behind"
    );

    let again = run_migrations(db.url()).await.unwrap();
    assert_eq!(again, applied);
    assert_eq!(
        tables(&db).await,
        [
            "account_deletions",
            "outbox",
            "push_tokens",
            "uploads",
            "users",
            "welcome_mails"
        ]
    );
    assert!(
        run_migrations(db.url()).await.unwrap().is_empty(),
        "nothing left to apply"
    );
}

#[tokio::test]
async fn users_from_before_the_welcome_ledger_count_as_welcomed() {
    use ports::{ClaimWelcomeOutcome, JobId, SendHolder, WelcomeLedger as _};
    let db = TestDb::empty().await;
    run_migrations(db.url()).await.unwrap();
    assert_eq!(
        revert_last_migration(db.url()).await.unwrap(),
        "20261208000001",
        "account deletions came last"
    );
    assert_eq!(
        revert_last_migration(db.url()).await.unwrap(),
        "20261207000001",
        "uploads came after the ledger"
    );
    let reverted = revert_last_migration(db.url()).await.unwrap();
    assert_eq!(
        reverted, "20261206000001",
        "the ledger's migration came before it"
    );
    // Users of the earlier version: one got a welcome mail, one had no address.
    TestDb::execute(
        &db,
        "INSERT INTO users (id, firebase_uid, email) VALUES \
         (gen_random_uuid(), 'legacy', 'legacy@example.com'), \
         (gen_random_uuid(), 'no-address', NULL)",
    )
    .await;
    run_migrations(db.url()).await.unwrap();
    let ledger = PgWelcomeLedger::new(build_pool(&PgSettings::new(db.url())).unwrap(), b"k");
    let claim = |uid: &str, to: &str| {
        let (uid, to) = (
            domain::FirebaseUid::parse(uid).unwrap(),
            domain::Email::parse(to).unwrap(),
        );
        let ledger = ledger.clone();
        async move {
            let holder = SendHolder {
                job: JobId::new(),
                lease: 1,
            };
            let month = std::time::Duration::from_secs(30 * 24 * 3600);
            ledger.claim(&uid, &to, holder, month, month).await.unwrap()
        }
    };
    assert_eq!(
        claim("legacy", "legacy@example.com").await,
        ClaimWelcomeOutcome::AlreadySent,
        "welcomed under the earlier rules"
    );
    assert_eq!(
        claim("no-address", "later@example.com").await,
        ClaimWelcomeOutcome::Claimed,
        "never had an address, so never had a welcome"
    );
}

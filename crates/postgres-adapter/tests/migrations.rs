//! Every migration goes up, down and up again.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use postgres_adapter::{revert_all_migrations, run_migrations};
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
    assert_eq!(tables(&db).await, ["outbox", "push_tokens", "users"]);

    let reverted = revert_all_migrations(db.url()).await.unwrap();
    assert_eq!(reverted.len(), applied.len());
    assert!(
        tables(&db).await.is_empty(),
        "down.sql leaves nothing behind"
    );

    let again = run_migrations(db.url()).await.unwrap();
    assert_eq!(again, applied);
    assert_eq!(tables(&db).await, ["outbox", "push_tokens", "users"]);
    assert!(
        run_migrations(db.url()).await.unwrap().is_empty(),
        "nothing left to apply"
    );
}

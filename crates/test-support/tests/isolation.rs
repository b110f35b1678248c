//! The harness keeps its promises: what a test creates is gone after it.

use deadpool_redis::redis::{self, AsyncCommands as _};
use test_support::{ScratchDatabase, TestDb, TestRedis};

#[tokio::test]
async fn a_test_schema_is_migrated_and_dropped_with_its_value() {
    let db = TestDb::new().await;
    let schema = db.schema().to_owned();
    let tables = db
        .scalar(&format!(
            "SELECT count(*) AS value FROM information_schema.tables \
             WHERE table_schema = '{schema}' AND table_name IN ('users', 'push_tokens', 'outbox')"
        ))
        .await;
    assert_eq!(tables, 3, "migrated");
    let probe = TestDb::empty().await;
    drop(db);
    let left = probe
        .scalar(&format!(
            "SELECT count(*) AS value FROM pg_namespace WHERE nspname = '{schema}'"
        ))
        .await;
    assert_eq!(left, 0, "the schema is dropped on drop");
}

#[tokio::test]
async fn leftover_test_schemas_and_keys_of_crashed_runs_are_swept_on_start() {
    // A schema and a key of a run from two hours ago, and a fresh one of a
    // run that may still be going.
    let probe = TestDb::empty().await;
    let old = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 7200;
    let stale_schema = format!("test_{old}_sweepme");
    probe
        .execute(&format!("CREATE SCHEMA {stale_schema}"))
        .await;
    let redis = TestRedis::new().await;
    let mut conn = redis.connection().await;
    let stale_key = format!("test:{old}:sweepme:k");
    let _: () = conn.set(&stale_key, 1).await.unwrap();

    // A new test process sweeps; run the harness's sweep as a new process does.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_new_process_only_needs_a_schema_and_a_prefix",
            "--ignored",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let schemas = probe
        .scalar(&format!(
            "SELECT count(*) AS value FROM pg_namespace WHERE nspname = '{stale_schema}'"
        ))
        .await;
    assert_eq!(schemas, 0, "the stale schema was swept");
    let exists: bool = redis::cmd("EXISTS")
        .arg(&stale_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!exists, "the stale key was swept");
    assert_eq!(
        probe
            .scalar(&format!(
                "SELECT count(*) AS value FROM pg_namespace WHERE nspname = '{}'",
                probe.schema()
            ))
            .await,
        1,
        "a schema still in use is left alone"
    );
}

/// Run by the test above in a child process (a fresh harness).
#[tokio::test]
#[ignore = "run as a child process by the sweep test"]
async fn a_new_process_only_needs_a_schema_and_a_prefix() {
    let _db = TestDb::empty().await;
    let _redis = TestRedis::new().await;
}

#[tokio::test]
async fn a_test_prefix_is_emptied_with_scan_and_unlink_on_drop() {
    let redis = TestRedis::new().await;
    let other = TestRedis::new().await;
    let mut conn = redis.connection().await;
    for i in 0..2500 {
        let _: () = conn
            .set(format!("{}k{i}", redis.prefix()), i)
            .await
            .unwrap();
    }
    let _: () = conn
        .set(format!("{}keep", other.prefix()), 1)
        .await
        .unwrap();
    assert_eq!(redis.keys().await.len(), 2500);
    let prefix = redis.prefix().to_owned();
    drop(redis);
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(left.is_empty(), "{} keys left", left.len());
    assert_eq!(other.keys().await.len(), 1, "another test's keys are kept");
}

#[tokio::test]
async fn a_scratch_database_is_dropped_with_its_value() {
    let scratch = ScratchDatabase::new().await;
    let probe = ScratchDatabase::new().await;
    assert!(!scratch.exists().await, "not created until a test does");
    scratch.create().await;
    assert!(probe.database_exists(scratch.name()).await);
    let name = scratch.name().to_owned();
    drop(scratch);
    assert!(!probe.database_exists(&name).await, "dropped on drop");
}

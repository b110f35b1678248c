//! Connections the network or the server took away: a pooled connection
//! that went stale while idle (a load balancer forgot it) costs no caller
//! an error where repeating the operation is safe, and a server that is
//! down for a moment (restarting, waking from scale-to-zero) is waited for
//! within the acquire timeout. The Postgres is the real one, behind a TCP
//! proxy the test turns against the pool's connections.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use domain::{DisplayName, FirebaseUid, Platform, ProfileDefaults, ProfilePatch, PushToken};
use ports::{
    FindUserError, PushTokenRepository as _, UnregisterPushTokenError, UpsertOutcome,
    UserRepository as _,
};
use postgres_adapter::{PgPool, PgPushTokenRepository, PgSettings, PgUserRepository, build_pool};
use std::time::{Duration, Instant};
use test_support::{TcpProxy, TestDb};

fn uid(s: &str) -> FirebaseUid {
    FirebaseUid::parse(s).unwrap()
}

/// `db`'s URL with its host and port replaced by the proxy's.
fn via(db: &TestDb, port: u16) -> String {
    let mut url = url::Url::parse(db.url()).unwrap();
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(port)).unwrap();
    url.to_string()
}

/// Where `db` really is, as `host:port`.
fn upstream(db: &TestDb) -> String {
    let url = url::Url::parse(db.url()).unwrap();
    format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432))
}

/// A pool of one connection through `proxy`, with that connection open
/// and idle in the pool.
async fn warm_pool(db: &TestDb, proxy: &TcpProxy) -> (PgSettings, PgPool) {
    let settings = PgSettings {
        max_connections: 1,
        ..PgSettings::new(via(db, proxy.port()))
    };
    let pool = build_pool(&settings).unwrap();
    drop(pool.get().await.unwrap());
    assert_eq!(pool.size().0, 1);
    (settings, pool)
}

#[tokio::test]
async fn a_read_on_a_connection_that_went_stale_while_idle_is_answered() {
    let db = TestDb::new().await;
    let proxy = TcpProxy::start(&upstream(&db)).await;
    let (_, pool) = warm_pool(&db, &proxy).await;
    let users = PgUserRepository::new(pool);
    let u = uid("stale-read");
    users
        .upsert_profile(&u, &ProfilePatch::default(), &ProfileDefaults::default())
        .await
        .unwrap();
    proxy.go_stale();
    let found = users.find_by_uid(&u).await;
    assert!(
        matches!(found, Ok(Some(ref user)) if user.uid == u),
        "{found:?}"
    );
}

#[tokio::test]
async fn a_pipelined_read_on_a_shared_connection_that_went_stale_is_answered() {
    let db = TestDb::new().await;
    let proxy = TcpProxy::start(&upstream(&db)).await;
    let (settings, pool) = warm_pool(&db, &proxy).await;
    let users = PgUserRepository::new(pool).with_pipelined_reads(&settings, 1);
    let u = uid("stale-shared");
    users
        .upsert_profile(&u, &ProfilePatch::default(), &ProfileDefaults::default())
        .await
        .unwrap();
    // The shared connection is open, then goes stale.
    users.find_by_uid(&u).await.unwrap().unwrap();
    proxy.go_stale();
    for _ in 0..2 {
        let found = users.find_by_uid(&u).await;
        assert!(matches!(found, Ok(Some(_))), "{found:?}");
    }
}

#[tokio::test]
async fn a_transaction_on_a_stale_connection_runs_once_on_a_fresh_one() {
    let db = TestDb::new().await;
    let proxy = TcpProxy::start(&upstream(&db)).await;
    let (_, pool) = warm_pool(&db, &proxy).await;
    let users = PgUserRepository::new(pool);
    let u = uid("stale-write");
    users
        .upsert_profile(&u, &ProfilePatch::default(), &ProfileDefaults::default())
        .await
        .unwrap();
    proxy.go_stale();
    let patch = ProfilePatch {
        display_name: Some(DisplayName::parse("After").unwrap()),
        ..ProfilePatch::default()
    };
    let done = users
        .upsert_profile(&u, &patch, &ProfileDefaults::default())
        .await
        .unwrap();
    assert_eq!(done.outcome, UpsertOutcome::Updated);
    // Applied once: one created and one updated event.
    assert_eq!(db.scalar("SELECT count(*) AS value FROM outbox").await, 2);
}

/// A pooler or a server restart takes every connection at once: the retry
/// must not take another of the dead ones idle in the pool.
#[tokio::test]
async fn when_every_pooled_and_shared_connection_went_stale_the_retry_takes_a_fresh_one() {
    const CONNECTIONS: usize = 4;
    let db = TestDb::new().await;
    let proxy = TcpProxy::start(&upstream(&db)).await;
    let settings = PgSettings {
        max_connections: CONNECTIONS,
        ..PgSettings::new(via(&db, proxy.port()))
    };
    let pool = build_pool(&settings).unwrap();
    // All of them open and idle in the pool.
    let held: Vec<_> = futures_util::future::join_all((0..CONNECTIONS).map(|_| pool.get()))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    drop(held);
    assert_eq!(pool.size().0, CONNECTIONS);
    let users = PgUserRepository::new(pool).with_pipelined_reads(&settings, 3);
    let u = uid("all-stale");
    users
        .upsert_profile(&u, &ProfilePatch::default(), &ProfileDefaults::default())
        .await
        .unwrap();
    // Every shared connection open too.
    for _ in 0..3 {
        users.find_by_uid(&u).await.unwrap().unwrap();
    }
    proxy.go_stale();
    let patch = ProfilePatch {
        display_name: Some(DisplayName::parse("After all").unwrap()),
        ..ProfilePatch::default()
    };
    let done = users
        .upsert_profile(&u, &patch, &ProfileDefaults::default())
        .await;
    assert!(
        matches!(done, Ok(ref d) if d.outcome == UpsertOutcome::Updated),
        "{done:?}"
    );
    for _ in 0..3 {
        let found = users.find_by_uid(&u).await;
        assert!(matches!(found, Ok(Some(_))), "{found:?}");
    }
    assert_eq!(db.scalar("SELECT count(*) AS value FROM outbox").await, 2);
}

#[tokio::test]
async fn a_delete_reporting_what_it_removed_is_not_repeated_directly() {
    let db = TestDb::new().await;
    let proxy = TcpProxy::start(&upstream(&db)).await;
    let (_, pool) = warm_pool(&db, &proxy).await;
    let tokens = PgPushTokenRepository::new(pool);
    let (u, t) = (uid("stale-once"), PushToken::parse("tok-stale").unwrap());
    tokens
        .register(&u, &t, Platform::Android, &ProfileDefaults::default())
        .await
        .unwrap();
    proxy.go_stale();
    // The statement cannot say whether it reached the server, so it is
    // reported, not repeated; here it did not, and the token is still there.
    let first = tokens.unregister(&u, &t).await;
    assert!(
        matches!(first, Err(UnregisterPushTokenError::Unavailable(_))),
        "{first:?}"
    );
    assert_eq!(
        tokens
            .list_for_user(&u, None, 10)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    tokens.unregister(&u, &t).await.unwrap();
}

#[tokio::test]
async fn a_server_back_within_the_acquire_timeout_answers_the_first_request() {
    // Nothing listens for the first second (a server restarting, a compute
    // waking up); the pool waits up to its acquire timeout of 3 s.
    const DOWN_FOR: Duration = Duration::from_secs(1);
    let db = TestDb::new().await;
    let proxy = TcpProxy::start_after(&upstream(&db), DOWN_FOR);
    let settings = PgSettings {
        acquire_timeout: DOWN_FOR * 3,
        ..PgSettings::new(via(&db, proxy.port()))
    };
    let users = PgUserRepository::new(build_pool(&settings).unwrap());
    let started = Instant::now();
    let found = users.find_by_uid(&uid("nobody")).await;
    assert!(matches!(found, Ok(None)), "{found:?}");
    assert!(started.elapsed() >= DOWN_FOR, "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_server_that_stays_down_is_unavailable_after_the_acquire_timeout() {
    const ACQUIRE: Duration = Duration::from_millis(500);
    let db = TestDb::new().await;
    // A port nothing listens on.
    let settings = PgSettings {
        acquire_timeout: ACQUIRE,
        ..PgSettings::new(via(&db, test_support::free_port()))
    };
    let users = PgUserRepository::new(build_pool(&settings).unwrap());
    let started = Instant::now();
    let found = users.find_by_uid(&uid("nobody")).await;
    assert!(
        matches!(found, Err(FindUserError::Unavailable(_))),
        "{found:?}"
    );
    // Waited for it until the timeout, and no longer than the timeout and
    // one last connect attempt (refused at once on loopback) with a
    // second's margin.
    let took = started.elapsed();
    assert!(
        took >= ACQUIRE && took < ACQUIRE + Duration::from_secs(1),
        "{took:?}"
    );
}

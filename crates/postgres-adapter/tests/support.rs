//! `PgSupport` against a real Postgres: a user found by uid or by address,
//! with devices as fingerprints only and the welcome mail; the outbox's
//! backlog and failing rows.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use ports::SupportAdmin;
use postgres_adapter::{PgSettings, PgSupport, build_pool};
use test_support::TestDb;

const TOKEN: &str = "fcm-token-that-must-never-leave-the-database-0123456789";

async fn exec(conn: &mut AsyncPgConnection, sql: &str) {
    diesel::sql_query(sql).execute(conn).await.unwrap();
}

#[tokio::test]
async fn support_finds_a_user_by_uid_or_address_and_sees_the_outbox() {
    let db = TestDb::new().await;
    let mut conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    exec(
        &mut conn,
        "INSERT INTO users (id, firebase_uid, email, verified_email, display_name)
         VALUES ('0190f000-0000-7000-8000-000000000001', 'ada', 'Ada@Example.com', 'ada@example.com', 'Ada'),
                ('0190f000-0000-7000-8000-000000000002', 'bob', 'bob@example.com', NULL, NULL)",
    )
    .await;
    exec(
        &mut conn,
        &format!(
            "INSERT INTO push_tokens (id, token, platform, user_id)
             VALUES ('0190f000-0000-7000-8000-0000000000a1', '{TOKEN}', 'ios',
                     '0190f000-0000-7000-8000-000000000001')"
        ),
    )
    .await;
    exec(
        &mut conn,
        "INSERT INTO welcome_mails (uid_hash, holder_job, holder_lease, sent_at)
         VALUES (sha256('trellis:welcome:uid:ada'::bytea), gen_random_uuid(), 1, now())",
    )
    .await;
    exec(
        &mut conn,
        "INSERT INTO outbox (event_id, topic, event_type, payload, attempts, last_error, created_at)
         VALUES (gen_random_uuid(), 'users', 'user.created', '{}', 3, 'redis: connection refused', now() - interval '90 seconds'),
                (gen_random_uuid(), 'users', 'user.created', '{}', 0, NULL, now()),
                (gen_random_uuid(), 'users', 'user.deleted', '{}', 0, NULL, now())",
    )
    .await;
    exec(
        &mut conn,
        "UPDATE outbox SET published_at = now() WHERE event_type = 'user.deleted'",
    )
    .await;

    let support = PgSupport::new(build_pool(&PgSettings::new(db.url())).unwrap());
    for query in ["ada", "ADA@example.COM", " ada@example.com "] {
        let found = support.find_users(query).await.unwrap();
        assert_eq!(found.len(), 1, "{query}");
        let ada = &found[0];
        assert_eq!(
            (ada.uid.as_str(), ada.display_name.as_deref()),
            ("ada", Some("Ada"))
        );
        assert_eq!(ada.devices.len(), 1);
        assert_eq!(ada.devices[0].platform, "ios");
        assert_eq!(
            ada.devices[0].fingerprint,
            domain::PushToken::parse(TOKEN).unwrap().fingerprint()
        );
        assert!(
            !format!("{found:?}").contains(TOKEN),
            "the token itself never leaves"
        );
        assert!(ada.welcome_claimed_at_ms.is_some() && ada.welcome_sent_at_ms.is_some());
    }
    let bob = support.find_users("bob").await.unwrap();
    assert_eq!(bob.len(), 1);
    assert!(bob[0].devices.is_empty() && bob[0].welcome_sent_at_ms.is_none());
    assert!(support.find_users("nobody").await.unwrap().is_empty());
    assert!(support.find_users("").await.unwrap().is_empty());

    let outbox = support.outbox().await.unwrap();
    assert_eq!(
        outbox.backlog, 2,
        "two rows wait, the published one does not count"
    );
    assert!(outbox.oldest_age_ms.unwrap() >= 90_000);
    assert_eq!(outbox.failing.len(), 1);
    assert_eq!(outbox.failing[0].attempts, 3);
    assert_eq!(outbox.failing[0].last_error, "redis: connection refused");
}

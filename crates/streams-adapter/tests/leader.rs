//! The relay leader's appends: fenced by its term, and confirmed by a
//! replica before the relay marks them published. Real Redis servers: the
//! shared one, and a primary with a replica and a Sentinel.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use chrono::Utc;
use domain::{DomainEvent, EventEnvelope, FirebaseUid, RawEvent, UserCreated, UserId};
use fred::prelude::*;
use ports::{EventPublisher, LeaderTerm, PublishEventError, ReplicaAcks, ReplicaWait};
use std::time::{Duration, Instant};
use streams_adapter::{RedisStreamPublisher, stream_key};
use test_support::{TestRedis, TestSentinel};

fn event(topic: &str) -> RawEvent {
    let mut raw = RawEvent::from(&EventEnvelope::new(
        DomainEvent::UserCreated(UserCreated {
            user_id: UserId::new(),
            uid: FirebaseUid::parse("leader-test").unwrap(),
            email_verified: false,
            email: None,
            display_name: None,
            verified_email: None,
        }),
        Utc::now(),
    ));
    raw.topic = topic.to_owned();
    raw
}

async fn len(client: &Client, key: &str) -> u64 {
    client.xlen(key).await.unwrap()
}

#[tokio::test]
async fn a_leaders_append_is_refused_once_a_later_term_has_appended_to_the_stream() {
    let redis = TestRedis::new().await;
    let client = streams_adapter::connect(redis.url(), Duration::from_secs(5))
        .await
        .unwrap();
    let publisher = RedisStreamPublisher::new(client.clone(), redis.prefix());
    let users = stream_key(redis.prefix(), "users");
    publisher
        .publish_as_leader(&event("users"), LeaderTerm(5))
        .await
        .unwrap();
    // An earlier term: refused, nothing written, the fence named.
    let refused = publisher
        .publish_as_leader(&event("users"), LeaderTerm(3))
        .await;
    assert!(
        matches!(
            refused,
            Err(PublishEventError::Fenced { by: LeaderTerm(5) })
        ),
        "{refused:?}"
    );
    assert_eq!(len(&client, &users).await, 1);
    // The same term goes on; a later one raises the fence.
    publisher
        .publish_as_leader(&event("users"), LeaderTerm(5))
        .await
        .unwrap();
    publisher
        .publish_as_leader(&event("users"), LeaderTerm(7))
        .await
        .unwrap();
    assert!(matches!(
        publisher
            .publish_as_leader(&event("users"), LeaderTerm(5))
            .await,
        Err(PublishEventError::Fenced { by: LeaderTerm(7) })
    ));
    assert_eq!(len(&client, &users).await, 3);
    // Terms as large as the database's clock in microseconds survive the
    // script's numbers exactly.
    let now_us = u64::try_from(Utc::now().timestamp_micros()).unwrap();
    publisher
        .publish_as_leader(&event("clock"), LeaderTerm(now_us + 1))
        .await
        .unwrap();
    assert!(matches!(
        publisher
            .publish_as_leader(&event("clock"), LeaderTerm(now_us))
            .await,
        Err(PublishEventError::Fenced { by }) if by == LeaderTerm(now_us + 1)
    ));
    // Each stream has its own fence: another topic takes the early term.
    publisher
        .publish_as_leader(&event("uploads"), LeaderTerm(3))
        .await
        .unwrap();
    // And a lone Redis (no replica) confirms at once.
    publisher.confirm().await.unwrap();
}

#[tokio::test]
async fn confirm_waits_for_a_replica_and_fails_while_none_acknowledges() {
    let ha = TestSentinel::start();
    let client = streams_adapter::connect(&ha.url(), Duration::from_secs(5))
        .await
        .unwrap();
    let timeout = Duration::from_millis(300);
    let publisher =
        RedisStreamPublisher::new(client.clone(), "wait-test:").with_replica_wait(ReplicaWait {
            acks: ReplicaAcks::Auto,
            timeout,
        });
    // Nothing appended since the last confirmation: nothing to wait for.
    let before = ha.primary_waits();
    publisher.confirm().await.unwrap();
    assert_eq!(ha.primary_waits(), before);
    for _ in 0..3 {
        publisher
            .publish_as_leader(&event("users"), LeaderTerm(1))
            .await
            .unwrap();
    }
    publisher.confirm().await.unwrap();
    assert_eq!(
        ha.primary_waits(),
        before + 1,
        "one WAIT for the three appends"
    );

    let mut stall = ha.stall_replica(3);
    publisher
        .publish_as_leader(&event("users"), LeaderTerm(1))
        .await
        .unwrap();
    let started = Instant::now();
    let unconfirmed = publisher.confirm().await;
    assert!(
        matches!(unconfirmed, Err(PublishEventError::Unavailable(_))),
        "an append no replica holds was confirmed: {unconfirmed:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(2_500));
    stall.wait().unwrap();

    // Asking for more replicas than there are: never confirmed.
    let greedy = RedisStreamPublisher::new(client, "wait-test:").with_replica_wait(ReplicaWait {
        acks: ReplicaAcks::AtLeast(2),
        timeout,
    });
    greedy
        .publish_as_leader(&event("users"), LeaderTerm(1))
        .await
        .unwrap();
    assert!(matches!(
        greedy.confirm().await,
        Err(PublishEventError::Unavailable(_))
    ));
}

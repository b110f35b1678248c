//! The event bus against a real Redis.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use async_trait::async_trait;
use chrono::Utc;
use domain::{DomainEvent, EventEnvelope, FirebaseUid, RawEvent, UserCreated, UserDeleted, UserId};
use fred::prelude::*;
use ports::{EventConsumer, EventHandler, EventPublisher, HandleEventError};
use ports_testing::contract::eventually;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use streams_adapter::{
    ConsumerSettings, RedisStreamConsumer, RedisStreamPublisher, StreamAdmin, stream_key,
};
use test_support::TestRedis;
use tokio_util::sync::CancellationToken;

async fn client(redis: &TestRedis) -> Client {
    streams_adapter::connect(redis.url(), Duration::from_secs(5))
        .await
        .unwrap()
}

fn created(i: usize) -> EventEnvelope {
    EventEnvelope::new(
        DomainEvent::UserCreated(UserCreated {
            user_id: UserId::new(),
            uid: FirebaseUid::parse(&format!("user-{i}")).unwrap(),
            email_verified: false,
            email: None,
            display_name: None,
            verified_email: None,
        }),
        Utc::now(),
    )
}

/// Records what it handled; fails the ids it is told to fail.
#[derive(Default)]
struct Recorder {
    handled: Mutex<Vec<EventEnvelope>>,
    fail: Mutex<Vec<uuid::Uuid>>,
}

impl Recorder {
    fn handled(&self) -> Vec<EventEnvelope> {
        self.handled.lock().unwrap().clone()
    }

    fn counts(&self) -> HashMap<uuid::Uuid, usize> {
        let mut m = HashMap::new();
        for e in self.handled() {
            *m.entry(e.id).or_default() += 1;
        }
        m
    }
}

#[async_trait]
impl EventHandler for Recorder {
    fn handles(&self, event: &DomainEvent) -> bool {
        matches!(event, DomainEvent::UserCreated(_))
    }

    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandleEventError> {
        if self.fail.lock().unwrap().contains(&event.id) {
            return Err(HandleEventError::Retry(anyhow::anyhow!(
                "poison event {}",
                event.id
            )));
        }
        self.handled.lock().unwrap().push(event.clone());
        Ok(())
    }
}

fn settings(redis: &TestRedis, group: &str, consumer: &str) -> ConsumerSettings {
    ConsumerSettings {
        block: Duration::from_millis(200),
        claim_idle: Duration::from_millis(300),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..ConsumerSettings::new(redis.prefix(), "users", group, consumer)
    }
}

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

fn start(consumer: RedisStreamConsumer, handler: Arc<dyn EventHandler>) -> Running {
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let task = tokio::spawn(async move {
        consumer.run(handler, signal).await.unwrap();
    });
    Running { stop, task }
}

#[tokio::test]
async fn published_events_are_consumed_in_order_once() {
    let redis = TestRedis::new().await;
    let c = client(&redis).await;
    let publisher = RedisStreamPublisher::new(c.clone(), redis.prefix());
    let events: Vec<_> = (0..50).map(created).collect();
    for e in &events[..25] {
        publish(&publisher, e).await;
    }
    let recorder = Arc::new(Recorder::default());
    let running = start(
        RedisStreamConsumer::new(&c, settings(&redis, "g", "c1")),
        recorder.clone(),
    );
    for e in &events[25..] {
        publish(&publisher, e).await;
    }
    eventually("all 50 events", Duration::from_secs(10), || async {
        (recorder.handled().len() >= 50).then_some(())
    })
    .await;
    running.stop().await;
    let ids: Vec<_> = recorder.handled().iter().map(|e| e.id).collect();
    assert_eq!(
        ids,
        events.iter().map(|e| e.id).collect::<Vec<_>>(),
        "in publish order, each once"
    );
    assert_eq!(
        recorder.handled()[0],
        events[0],
        "the event survives the wire intact"
    );
}

#[tokio::test]
async fn events_of_other_types_are_acknowledged_unhandled() {
    let redis = TestRedis::new().await;
    let c = client(&redis).await;
    let publisher = RedisStreamPublisher::new(c.clone(), redis.prefix());
    let deleted = EventEnvelope::new(
        DomainEvent::UserDeleted(UserDeleted {
            user_id: UserId::new(),
            uid: FirebaseUid::parse("x").unwrap(),
        }),
        Utc::now(),
    );
    publish(&publisher, &deleted).await;
    publish(&publisher, &created(1)).await;
    let recorder = Arc::new(Recorder::default());
    let running = start(
        RedisStreamConsumer::new(&c, settings(&redis, "g", "c1")),
        recorder.clone(),
    );
    eventually("the created event", Duration::from_secs(10), || async {
        (!recorder.handled().is_empty()).then_some(())
    })
    .await;
    running.stop().await;
    let pending: Vec<Value> = c
        .xpending(stream_key(redis.prefix(), "users"), "g", ())
        .await
        .unwrap();
    assert_eq!(pending[0].as_u64(), Some(0), "nothing left pending");
}

/// Publishes as the relay does (the event as carried).
async fn publish(publisher: &RedisStreamPublisher, event: &EventEnvelope) -> String {
    publisher.publish(&RawEvent::from(event)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_consumers_are_down_loses_nothing_however_long_the_stream_gets() {
    let redis = TestRedis::new().await;
    let c = client(&redis).await;
    let stream = stream_key(redis.prefix(), "users");
    let publisher = RedisStreamPublisher::new(c.clone(), redis.prefix());
    let capped = |group: &str, name: &str| ConsumerSettings {
        max_len: 100,
        ..settings(&redis, group, name)
    };
    // The welcome group's consumers are down (it was created when they
    // last ran); another group keeps up and trims what it can.
    let _: () = c
        .xgroup_create(&stream, "welcome", "$", true)
        .await
        .unwrap();
    let fast = Arc::new(Recorder::default());
    let running_fast = start(
        RedisStreamConsumer::new(&c, capped("fast", "f1")),
        fast.clone(),
    );
    let events: Vec<_> = (0..300).map(created).collect();
    for e in &events {
        publish(&publisher, e).await;
    }
    eventually(
        "the fast group to handle all",
        Duration::from_secs(20),
        || async { (fast.handled().len() == 300).then_some(()) },
    )
    .await;
    // Let the fast group's janitor (every claim_idle / 2) trim twice.
    tokio::time::sleep(Duration::from_millis(300) * 2).await;
    let len: u64 = c.xlen(&stream).await.unwrap();
    assert_eq!(
        len, 300,
        "nothing the welcome group has not read is trimmed"
    );

    let slow = Arc::new(Recorder::default());
    let running_slow = start(
        RedisStreamConsumer::new(&c, capped("welcome", "w1")),
        slow.clone(),
    );
    eventually(
        "every sign-up, after the outage",
        Duration::from_secs(20),
        || async { (slow.handled().len() == 300).then_some(()) },
    )
    .await;
    let ids: Vec<_> = slow.handled().iter().map(|e| e.id).collect();
    assert_eq!(ids, events.iter().map(|e| e.id).collect::<Vec<_>>());
    // Now both groups have everything: the stream shrinks back under its cap.
    eventually(
        "the stream to be trimmed",
        Duration::from_secs(20),
        || async {
            let len: u64 = c.xlen(&stream).await.unwrap();
            (len <= 100).then_some(())
        },
    )
    .await;
    running_fast.stop().await;
    running_slow.stop().await;
}

#[tokio::test]
async fn an_event_of_a_type_this_consumer_does_not_know_is_left_pending_never_acked_silently() {
    let redis = TestRedis::new().await;
    let c = client(&redis).await;
    let stream = stream_key(redis.prefix(), "users");
    let publisher = RedisStreamPublisher::new(c.clone(), redis.prefix());
    let future = RawEvent {
        id: uuid::Uuid::now_v7(),
        occurred_at: Utc::now(),
        topic: "users".into(),
        event_type: "user.future".into(),
        payload: serde_json::json!({"from": "a newer version"}),
    };
    publisher.publish(&future).await.unwrap();
    let after = created(1);
    publish(&publisher, &after).await;
    let recorder = Arc::new(Recorder::default());
    let long_idle = ConsumerSettings {
        claim_idle: Duration::from_secs(600),
        ..settings(&redis, "g", "old")
    };
    let running = start(RedisStreamConsumer::new(&c, long_idle), recorder.clone());
    eventually(
        "the known event after it",
        Duration::from_secs(10),
        || async { recorder.counts().contains_key(&after.id).then_some(()) },
    )
    .await;
    running.stop().await;
    let pending: Vec<Value> = c.xpending(&stream, "g", ()).await.unwrap();
    assert_eq!(
        pending[0].as_u64(),
        Some(1),
        "the unknown one is still pending"
    );
    // A newer consumer of the group (the rolling deploy finished) can claim it.
    let claimed: Value = c
        .custom(
            fred::types::CustomCommand::new_static(
                "XAUTOCLAIM",
                fred::types::ClusterHash::FirstKey,
                false,
            ),
            vec![stream.as_str(), "g", "newer", "0", "0-0"],
        )
        .await
        .unwrap();
    assert!(
        format!("{claimed:?}").contains(&future.id.to_string()),
        "{claimed:?}"
    );
    let dead: u64 = c.xlen(format!("{stream}:dead")).await.unwrap();
    assert_eq!(dead, 0);
}

#[tokio::test]
async fn an_unknown_type_no_consumer_takes_is_dead_lettered_with_the_reason_and_can_be_replayed() {
    let redis = TestRedis::new().await;
    let c = client(&redis).await;
    let publisher = RedisStreamPublisher::new(c.clone(), redis.prefix());
    let future = RawEvent {
        id: uuid::Uuid::now_v7(),
        occurred_at: Utc::now(),
        topic: "users".into(),
        event_type: "user.future".into(),
        payload: serde_json::json!({}),
    };
    publisher.publish(&future).await.unwrap();
    let recorder = Arc::new(Recorder::default());
    let mut s = settings(&redis, "g", "c1");
    s.max_deliveries = 2;
    let running = start(RedisStreamConsumer::new(&c, s), recorder.clone());
    let admin = StreamAdmin::new(c.clone(), redis.prefix());
    let dead = eventually("the dead letter", Duration::from_secs(15), || async {
        let dead = admin.dead_letters("users", 10).await.unwrap();
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    running.stop().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event_type, "user.future");
    assert_eq!(dead[0].group, "g");
    assert!(
        dead[0].reason.contains("unknown to this consumer"),
        "{}",
        dead[0].reason
    );
    assert!(dead[0].event.contains(&future.id.to_string()));

    // Replayed (a newer version is out now): back on the stream, gone from
    // the dead letters.
    let new_id = admin.replay("users", &dead[0].id).await.unwrap().unwrap();
    assert!(admin.dead_letters("users", 10).await.unwrap().is_empty());
    let entries: Vec<(String, HashMap<String, String>)> = c
        .xrange(stream_key(redis.prefix(), "users"), &new_id, &new_id, None)
        .await
        .unwrap();
    assert_eq!(entries[0].1["type"], "user.future");
    assert!(entries[0].1["event"].contains(&future.id.to_string()));
    assert!(
        !entries[0].1.contains_key("reason"),
        "only the original fields"
    );
    assert_eq!(
        admin.replay("users", &dead[0].id).await.unwrap(),
        None,
        "once"
    );
}

#[tokio::test]
async fn replaying_every_dead_letter_hands_each_to_the_group_once() {
    let redis = TestRedis::new().await;
    let c = client(&redis).await;
    let publisher = RedisStreamPublisher::new(c.clone(), redis.prefix());
    let poison: Vec<_> = (0..3).map(created).collect();
    let recorder = Arc::new(Recorder::default());
    recorder
        .fail
        .lock()
        .unwrap()
        .extend(poison.iter().map(|e| e.id));
    for e in &poison {
        publish(&publisher, e).await;
    }
    let mut s = settings(&redis, "g", "c1");
    s.max_deliveries = 1;
    let running = start(RedisStreamConsumer::new(&c, s), recorder.clone());
    let admin = StreamAdmin::new(c.clone(), redis.prefix());
    eventually("three dead letters", Duration::from_secs(15), || async {
        (admin.dead_letters("users", 10).await.unwrap().len() == 3).then_some(())
    })
    .await;
    running.stop().await;
    // The cause is fixed; every dead letter goes back.
    recorder.fail.lock().unwrap().clear();
    assert_eq!(admin.replay_all("users").await.unwrap(), 3);
    // (Its own delivery limit, not the first run's 1: a replayed entry can
    // be handed to the first run's abandoned blocking read, and that counts.)
    let running = start(
        RedisStreamConsumer::new(&c, settings(&redis, "g", "c1")),
        recorder.clone(),
    );
    eventually("the replayed events", Duration::from_secs(10), || async {
        (recorder.handled().len() == 3).then_some(())
    })
    .await;
    running.stop().await;
    let counts = recorder.counts();
    assert!(
        poison.iter().all(|e| counts.get(&e.id) == Some(&1)),
        "{counts:?}"
    );
    assert!(admin.dead_letters("users", 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_entry_a_dead_consumer_never_acked_is_claimed_and_processed_once() {
    let redis = TestRedis::new().await;
    let c = client(&redis).await;
    let stream = stream_key(redis.prefix(), "users");
    let publisher = RedisStreamPublisher::new(c.clone(), redis.prefix());
    let event = created(7);
    publish(&publisher, &event).await;
    // A consumer reads the entry and dies without acknowledging it.
    let _: () = c.xgroup_create(&stream, "g", "0", true).await.unwrap();
    let _: Value = c
        .xreadgroup::<Value, _, _, _, _>("g", "dead-consumer", Some(10), None, false, &stream, ">")
        .await
        .unwrap();

    let recorder = Arc::new(Recorder::default());
    let running = start(
        RedisStreamConsumer::new(&c, settings(&redis, "g", "alive")),
        recorder.clone(),
    );
    eventually("the orphaned entry", Duration::from_secs(10), || async {
        (!recorder.handled().is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await; // two more janitor rounds: no repeat
    running.stop().await;
    assert_eq!(recorder.counts().get(&event.id), Some(&1));
}

#[tokio::test]
async fn the_janitor_leaves_an_entry_alone_until_it_has_been_idle_for_claim_idle() {
    let redis = TestRedis::new().await;
    let c = client(&redis).await;
    let stream = stream_key(redis.prefix(), "users");
    let publisher = RedisStreamPublisher::new(c.clone(), redis.prefix());
    let event = created(8);
    publish(&publisher, &event).await;
    let _: () = c.xgroup_create(&stream, "g", "0", true).await.unwrap();
    let _: Value = c
        .xreadgroup::<Value, _, _, _, _>("g", "slow-consumer", Some(10), None, false, &stream, ">")
        .await
        .unwrap();
    let read_at = std::time::Instant::now();

    let recorder = Arc::new(Recorder::default());
    let claim_idle = Duration::from_millis(1500);
    let running = start(
        RedisStreamConsumer::new(
            &c,
            ConsumerSettings {
                claim_idle,
                ..settings(&redis, "g", "alive")
            },
        ),
        recorder.clone(),
    );
    eventually(
        "the entry, once idle long enough",
        Duration::from_secs(10),
        || async { (!recorder.handled().is_empty()).then_some(()) },
    )
    .await;
    let waited = read_at.elapsed();
    running.stop().await;
    assert!(
        waited >= claim_idle,
        "claimed after {waited:?}, before it was idle for {claim_idle:?}"
    );
    assert_eq!(recorder.counts().get(&event.id), Some(&1));
}

#[tokio::test]
async fn a_restarted_consumer_first_finishes_its_own_pending_entries() {
    let redis = TestRedis::new().await;
    let c = client(&redis).await;
    let publisher = RedisStreamPublisher::new(c.clone(), redis.prefix());
    let events: Vec<_> = (0..5).map(created).collect();
    // The first run fails every event: they stay pending under its name.
    let failing = Arc::new(Recorder::default());
    failing
        .fail
        .lock()
        .unwrap()
        .extend(events.iter().map(|e| e.id));
    let long_idle = ConsumerSettings {
        // No janitor claim during the test: only the drain can find them.
        claim_idle: Duration::from_secs(600),
        ..settings(&redis, "g", "same-name")
    };
    let first = start(
        RedisStreamConsumer::new(&c, long_idle.clone()),
        failing.clone(),
    );
    for e in &events {
        publish(&publisher, e).await;
    }
    let stream = stream_key(redis.prefix(), "users");
    eventually("five pending entries", Duration::from_secs(10), || async {
        // NOGROUP until the consumer has created its group.
        let pending: Option<Value> = c.xpending(&stream, "g", ()).await.ok();
        let n = pending.and_then(|p| p.into_array().first().and_then(Value::as_u64));
        (n == Some(5)).then_some(())
    })
    .await;
    first.stop().await;
    assert!(failing.handled().is_empty());

    // Restarted under the same name with a working handler: no new entries
    // arrive, so only reading its own pending list can find these.
    let working = Arc::new(Recorder::default());
    let second = start(RedisStreamConsumer::new(&c, long_idle), working.clone());
    eventually("the pending entries", Duration::from_secs(10), || async {
        (working.handled().len() == 5).then_some(())
    })
    .await;
    second.stop().await;
    let handled: Vec<_> = working.handled().iter().map(|e| e.id).collect();
    let expected: Vec<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(handled, expected, "in order, once each");
}

#[tokio::test]
async fn a_poison_entry_is_dead_lettered_after_its_deliveries_with_the_reason() {
    let redis = TestRedis::new().await;
    let c = client(&redis).await;
    let publisher = RedisStreamPublisher::new(c.clone(), redis.prefix());
    let poison = created(1);
    let fine = created(2);
    let recorder = Arc::new(Recorder::default());
    recorder.fail.lock().unwrap().push(poison.id);
    publish(&publisher, &poison).await;
    publish(&publisher, &fine).await;
    let mut s = settings(&redis, "g", "c1");
    s.max_deliveries = 3;
    let dead_stream = s.dead_letter_stream();
    let running = start(RedisStreamConsumer::new(&c, s), recorder.clone());
    let dead: Vec<(String, HashMap<String, String>)> =
        eventually("the dead letter", Duration::from_secs(15), || async {
            let entries: Vec<(String, HashMap<String, String>)> =
                c.xrange(&dead_stream, "-", "+", None).await.unwrap();
            (!entries.is_empty()).then_some(entries)
        })
        .await;
    running.stop().await;
    assert_eq!(dead.len(), 1);
    let fields = &dead[0].1;
    assert!(fields["reason"].contains("poison event"), "{fields:?}");
    assert_eq!(fields["deliveries"], "4");
    assert_eq!(fields["group"], "g");
    assert!(fields["event"].contains(&poison.id.to_string()));
    assert_eq!(
        recorder.counts().get(&fine.id),
        Some(&1),
        "the poison entry did not block the next one"
    );
    let pending: Vec<Value> = c
        .xpending(stream_key(redis.prefix(), "users"), "g", ())
        .await
        .unwrap();
    assert_eq!(
        pending[0].as_u64(),
        Some(0),
        "the dead entry was acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_whose_connection_is_killed_mid_read_recovers_and_loses_nothing() {
    let redis = TestRedis::new().await;
    let c = client(&redis).await;
    let publisher = RedisStreamPublisher::new(c.clone(), redis.prefix());
    let recorder = Arc::new(Recorder::default());
    let mut s = settings(&redis, "g", "killed");
    s.block = Duration::from_secs(2);
    let consumer = RedisStreamConsumer::new(&c, s);
    let name = format!("name={}", consumer.connection_name());
    let running = start(consumer, recorder.clone());
    let events: Vec<_> = (0..40).map(created).collect();
    for e in &events[..20] {
        publish(&publisher, e).await;
    }
    eventually("the first half", Duration::from_secs(10), || async {
        (recorder.handled().len() >= 20).then_some(())
    })
    .await;
    // Kill this consumer's connection while it sits in a blocking
    // XREADGROUP (only ours: other tests share this Redis).
    let killed = eventually("a blocked reader", Duration::from_secs(10), || async {
        let list: String = c
            .custom(
                fred::types::CustomCommand::new_static(
                    "CLIENT",
                    fred::types::ClusterHash::FirstKey,
                    false,
                ),
                vec!["LIST"],
            )
            .await
            .unwrap();
        let ids: Vec<String> = list
            .lines()
            .filter(|l| l.contains("cmd=xreadgroup"))
            .filter(|l| l.split_whitespace().any(|f| f == name))
            .filter_map(|l| {
                l.split_whitespace()
                    .find_map(|f| f.strip_prefix("id="))
                    .map(str::to_owned)
            })
            .collect();
        (!ids.is_empty()).then_some(ids)
    })
    .await;
    for id in &killed {
        let _: Value = c
            .custom(
                fred::types::CustomCommand::new_static(
                    "CLIENT",
                    fred::types::ClusterHash::FirstKey,
                    false,
                ),
                vec!["KILL", "ID", id.as_str()],
            )
            .await
            .unwrap();
    }
    for e in &events[20..] {
        publish(&publisher, e).await;
    }
    eventually(
        "every event after the kill",
        Duration::from_secs(20),
        || async { (recorder.handled().len() >= 40).then_some(()) },
    )
    .await;
    running.stop().await;
    let counts = recorder.counts();
    assert!(
        events.iter().all(|e| counts.get(&e.id) == Some(&1)),
        "each event exactly once: {counts:?}"
    );
}

#[tokio::test]
async fn a_repeated_event_is_handled_once() {
    let redis = TestRedis::new().await;
    let c = client(&redis).await;
    let publisher = RedisStreamPublisher::new(c.clone(), redis.prefix());
    let e = created(3);
    publish(&publisher, &e).await;
    publish(&publisher, &e).await;
    let recorder = Arc::new(Recorder::default());
    let running = start(
        RedisStreamConsumer::new(&c, settings(&redis, "g", "c1")),
        recorder.clone(),
    );
    let marker = created(4);
    publish(&publisher, &marker).await;
    eventually("the marker event", Duration::from_secs(10), || async {
        recorder.counts().contains_key(&marker.id).then_some(())
    })
    .await;
    running.stop().await;
    assert_eq!(recorder.counts().get(&e.id), Some(&1));
}

#[tokio::test]
async fn shutdown_finishes_the_batch_in_hand_and_leaves_nothing_pending() {
    let redis = TestRedis::new().await;
    let c = client(&redis).await;
    let publisher = RedisStreamPublisher::new(c.clone(), redis.prefix());
    let recorder = Arc::new(Recorder::default());
    let running = start(
        RedisStreamConsumer::new(&c, settings(&redis, "g", "c1")),
        recorder.clone(),
    );
    for i in 0..30 {
        publish(&publisher, &created(i)).await;
    }
    eventually("some events", Duration::from_secs(10), || async {
        (!recorder.handled().is_empty()).then_some(())
    })
    .await;
    running.stop().await;
    let pending: Vec<Value> = c
        .xpending(stream_key(redis.prefix(), "users"), "g", ())
        .await
        .unwrap();
    assert_eq!(
        pending[0].as_u64(),
        Some(0),
        "whatever was read was handled and acknowledged"
    );
}

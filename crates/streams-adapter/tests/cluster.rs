//! The event bus, the cache and the fan-out on a real three-primary Redis
//! Cluster: each topic's stream, dead letters and processed marks share a
//! hash slot, and every command goes to the node of its key.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use async_trait::async_trait;
use chrono::Utc;
use domain::{DomainEvent, EventEnvelope, FirebaseUid, RawEvent, UserCreated, UserId};
use fred::prelude::*;
use ports::{
    Audience, EventConsumer, EventHandler, EventPublisher, Fanout, FanoutMessage, FanoutSink,
    HandleEventError, Notification,
};
use ports_testing::contract::eventually;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use streams_adapter::{
    ConsumerSettings, RedisCache, RedisFanout, RedisStreamConsumer, RedisStreamPublisher,
    StreamAdmin, cluster_stream_key,
};
use test_support::TestRedisCluster;
use tokio_util::sync::CancellationToken;

async fn client(cluster: &TestRedisCluster) -> Client {
    let c = streams_adapter::connect(&cluster.url(), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(fred::interfaces::ClientLike::is_clustered(&c));
    c
}

mod cache_contract_on_a_cluster {
    use super::*;

    struct Fixture {
        cache: RedisCache,
        _cluster: TestRedisCluster,
    }

    impl AsRef<RedisCache> for Fixture {
        fn as_ref(&self) -> &RedisCache {
            &self.cache
        }
    }

    async fn make() -> Fixture {
        let cluster = TestRedisCluster::start();
        let c = client(&cluster).await;
        Fixture {
            cache: RedisCache::new(c, cluster.prefix()),
            _cluster: cluster,
        }
    }

    ports_testing::cache_contract!(make());
}

#[derive(Default)]
struct Recorder(Mutex<Vec<uuid::Uuid>>);

#[async_trait]
impl EventHandler for Recorder {
    fn handles(&self, event: &DomainEvent) -> bool {
        matches!(event, DomainEvent::UserCreated(_))
    }

    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandleEventError> {
        self.0.lock().unwrap().push(event.id);
        Ok(())
    }
}

fn created(topic_user: usize) -> EventEnvelope {
    EventEnvelope::new(
        DomainEvent::UserCreated(UserCreated {
            user_id: UserId::new(),
            uid: FirebaseUid::parse(&format!("user-{topic_user}")).unwrap(),
            email_verified: false,
            email: None,
            display_name: None,
            verified_email: None,
        }),
        Utc::now(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_consumed_once_in_order_and_dead_letters_replay_on_a_cluster() {
    let cluster = TestRedisCluster::start();
    let c = client(&cluster).await;
    let prefix = cluster.prefix();
    let publisher = RedisStreamPublisher::new(c.clone(), prefix);
    let events: Vec<_> = (0..30).map(created).collect();
    for e in &events {
        publisher.publish(&RawEvent::from(e)).await.unwrap();
    }
    let future = RawEvent {
        id: uuid::Uuid::now_v7(),
        occurred_at: Utc::now(),
        topic: "users".into(),
        event_type: "user.future".into(),
        payload: serde_json::json!({}),
    };
    publisher.publish(&future).await.unwrap();
    let recorder = Arc::new(Recorder::default());
    let settings = ConsumerSettings {
        block: Duration::from_millis(200),
        claim_idle: Duration::from_millis(300),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        max_deliveries: 2,
        ..ConsumerSettings::new(prefix, "users", "g", "c1")
    };
    let consumer = RedisStreamConsumer::new(&c, settings);
    let stop = CancellationToken::new();
    let (signal, handler) = (stop.clone(), recorder.clone());
    let task = tokio::spawn(async move { consumer.run(handler, signal).await.unwrap() });
    let admin = StreamAdmin::new(c.clone(), prefix);
    let dead = eventually(
        "30 events and a dead letter",
        Duration::from_secs(20),
        || async {
            let dead = admin.dead_letters("users", 10).await.unwrap();
            (recorder.0.lock().unwrap().len() == 30 && !dead.is_empty()).then_some(dead)
        },
    )
    .await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        *recorder.0.lock().unwrap(),
        events.iter().map(|e| e.id).collect::<Vec<_>>(),
        "in publish order, each once"
    );
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event_type, "user.future");
    // The replay script moves an entry between two keys: one slot.
    let new_id = admin.replay("users", &dead[0].id).await.unwrap().unwrap();
    assert!(admin.dead_letters("users", 10).await.unwrap().is_empty());
    let stream = cluster_stream_key(prefix, "users");
    let entries: Vec<(String, std::collections::HashMap<String, String>)> =
        c.xrange(&stream, &new_id, &new_id, None).await.unwrap();
    assert_eq!(entries[0].1["type"], "user.future");
}

#[derive(Default)]
struct Inbox(Mutex<Vec<String>>);

impl FanoutSink for Inbox {
    fn deliver(&self, message: FanoutMessage) {
        self.0.lock().unwrap().push(message.notification.kind);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_receives_what_any_publishes_on_a_cluster() {
    let cluster = TestRedisCluster::start();
    let base = client(&cluster).await;
    let (a, b) = (
        RedisFanout::new(&base, cluster.prefix()).unwrap(),
        RedisFanout::new(&base, cluster.prefix()).unwrap(),
    );
    let (inbox_a, inbox_b) = (Arc::new(Inbox::default()), Arc::new(Inbox::default()));
    let stop = CancellationToken::new();
    a.subscribe(inbox_a.clone(), stop.clone()).await.unwrap();
    b.subscribe(inbox_b.clone(), stop.clone()).await.unwrap();
    let message = |kind: &str| FanoutMessage {
        origin: "a".into(),
        audience: Audience::Topic("news".into()),
        notification: Notification::new(kind, serde_json::json!({"n": 1})),
        disconnect: None,
        position: None,
        acked: None,
    };
    eventually("both subscriptions", Duration::from_secs(10), || async {
        a.publish(&message("ping")).await.unwrap();
        let got = |i: &Inbox| i.0.lock().unwrap().iter().any(|k| k == "ping");
        (got(&inbox_a) && got(&inbox_b)).then_some(())
    })
    .await;
    b.publish(&message("hello")).await.unwrap();
    eventually("hello on a", Duration::from_secs(5), || async {
        inbox_a
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|k| k == "hello")
            .then_some(())
    })
    .await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_history_and_presence_keep_their_contracts_on_a_cluster() {
    let cluster = TestRedisCluster::start();
    let base = client(&cluster).await;
    let fanout = RedisFanout::new(&base, cluster.prefix()).unwrap();
    // Topics hash to different nodes; each topic's keys share one slot.
    ports_testing::contract::realtime::recorded_messages_reach_subscribers_in_offset_order(&fanout)
        .await;
    ports_testing::contract::realtime::a_subscriber_recovers_exactly_what_it_missed(&fanout).await;
    ports_testing::contract::realtime::what_history_no_longer_covers_is_not_recovered(&fanout)
        .await;
    let presence = streams_adapter::RedisPresence::new(base.clone(), cluster.prefix());
    ports_testing::contract::realtime::presence_lists_joined_clients_until_they_leave(&presence)
        .await;
}

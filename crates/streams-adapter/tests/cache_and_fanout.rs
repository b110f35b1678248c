//! `RedisCache` passes the cache contract; `RedisFanout` carries messages
//! between instances and survives a reconnect.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use fred::prelude::*;
use ports::{Audience, Fanout, FanoutMessage, FanoutSink, Notification};
use ports_testing::contract::eventually;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use streams_adapter::{RedisCache, RedisFanout};
use test_support::TestRedis;

mod cache_contract {
    use super::*;

    /// The cache and the test prefix it lives under (cleaned up on drop).
    struct Fixture {
        cache: RedisCache,
        _redis: TestRedis,
    }

    impl AsRef<RedisCache> for Fixture {
        fn as_ref(&self) -> &RedisCache {
            &self.cache
        }
    }

    async fn make() -> Fixture {
        let redis = TestRedis::new().await;
        let client = streams_adapter::connect(redis.url(), Duration::from_secs(5))
            .await
            .unwrap();
        Fixture {
            cache: RedisCache::new(client, redis.prefix()),
            _redis: redis,
        }
    }

    ports_testing::cache_contract!(make());
}

#[derive(Default)]
struct Inbox(Mutex<Vec<FanoutMessage>>);

impl FanoutSink for Inbox {
    fn deliver(&self, message: FanoutMessage) {
        self.0.lock().unwrap().push(message);
    }
}

impl Inbox {
    fn kinds(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.notification.kind.clone())
            .collect()
    }
}

fn message(origin: &str, kind: &str) -> FanoutMessage {
    FanoutMessage {
        origin: origin.into(),
        audience: Audience::Topic("news".into()),
        notification: Notification::new(kind, serde_json::json!({"n": 1})),
        disconnect: None,
        position: None,
        acked: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_receives_what_any_publishes_even_after_a_reconnect() {
    let redis = TestRedis::new().await;
    let base = streams_adapter::connect(redis.url(), Duration::from_secs(5))
        .await
        .unwrap();
    let (a, b) = (
        RedisFanout::new(&base, redis.prefix()).unwrap(),
        RedisFanout::new(&base, redis.prefix()).unwrap(),
    );
    let (inbox_a, inbox_b) = (Arc::new(Inbox::default()), Arc::new(Inbox::default()));
    let stop = tokio_util::sync::CancellationToken::new();
    a.subscribe(inbox_a.clone(), stop.clone()).await.unwrap();
    b.subscribe(inbox_b.clone(), stop.clone()).await.unwrap();
    eventually("both subscriptions", Duration::from_secs(10), || async {
        a.publish(&message("a", "ping")).await.unwrap();
        (!inbox_a.kinds().is_empty() && !inbox_b.kinds().is_empty()).then_some(())
    })
    .await;
    a.publish(&message("a", "hello")).await.unwrap();
    eventually("hello on b", Duration::from_secs(5), || async {
        inbox_b.kinds().contains(&"hello".to_owned()).then_some(())
    })
    .await;

    // Kill both subscribing connections (only ours: other tests share this
    // Redis); the subscribers must come back.
    let names = [
        format!("name={}", a.subscriber_name()),
        format!("name={}", b.subscriber_name()),
    ];
    let mut killed = 0;
    let list: String = base
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
    for line in list
        .lines()
        .filter(|l| l.split_whitespace().any(|f| names.iter().any(|n| n == f)))
    {
        if let Some(id) = line.split_whitespace().find_map(|f| f.strip_prefix("id=")) {
            killed += 1;
            let _: Value = base
                .custom(
                    fred::types::CustomCommand::new_static(
                        "CLIENT",
                        fred::types::ClusterHash::FirstKey,
                        false,
                    ),
                    vec!["KILL", "ID", id],
                )
                .await
                .unwrap();
        }
    }
    assert_eq!(killed, 2, "both subscribers' connections were killed");
    eventually(
        "delivery after the reconnect",
        Duration::from_secs(15),
        || async {
            b.publish(&message("b", "after")).await.unwrap();
            (inbox_a.kinds().contains(&"after".to_owned())
                && inbox_b.kinds().contains(&"after".to_owned()))
            .then_some(())
        },
    )
    .await;
}

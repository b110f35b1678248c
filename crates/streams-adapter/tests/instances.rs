//! `RedisInstances`: heartbeats against a real Redis.

use fred::prelude::*;
use ports::{InstanceInfo, Instances};
use std::time::Duration;
use streams_adapter::RedisInstances;
use test_support::TestRedis;

fn info(id: &str, seconds_ago: i64) -> InstanceInfo {
    let now = chrono::Utc::now().timestamp_millis();
    InstanceInfo {
        id: id.into(),
        role: "worker".into(),
        version: "0.1.0".into(),
        started_at_ms: now - 3_600_000,
        last_seen_ms: now - seconds_ago * 1000,
        ws_connections: None,
    }
}

#[tokio::test]
async fn only_instances_that_beat_lately_are_alive_and_long_gone_ones_are_forgotten() {
    let redis = TestRedis::new().await;
    let client = streams_adapter::connect(redis.url(), Duration::from_secs(5))
        .await
        .unwrap();
    let instances = RedisInstances::new(client.clone(), redis.prefix());
    let alive_for = ports::admin::INSTANCE_ALIVE_FOR.as_secs() as i64;
    instances.beat(&info("fresh", 1)).await.unwrap();
    instances.beat(&info("stale", alive_for + 5)).await.unwrap();
    instances.beat(&info("gone", 2 * 3600)).await.unwrap();
    let mut serving = info("serve-1", 0);
    serving.role = "serve".into();
    serving.ws_connections = Some(3);
    instances.beat(&serving).await.unwrap();

    let alive = instances.alive().await.unwrap();
    let ids: Vec<&str> = alive.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["fresh", "serve-1"]);
    assert_eq!(alive[1], serving, "what it said, as it said it");
    let key = format!("{}instances", redis.prefix());
    let left: Vec<String> = client.hkeys(&key).await.unwrap();
    let mut left = left;
    left.sort();
    assert_eq!(
        left,
        ["fresh", "serve-1", "stale"],
        "an hour gone is forgotten"
    );
}

#[tokio::test]
async fn each_instance_counts_its_own_sockets_of_a_user() {
    use ports::SocketRegistry;
    let redis = TestRedis::new().await;
    let client = streams_adapter::connect(redis.url(), Duration::from_secs(5))
        .await
        .unwrap();
    let one = streams_adapter::RedisSocketRegistry::new(client.clone(), redis.prefix(), "one", 1);
    let two = streams_adapter::RedisSocketRegistry::new(client.clone(), redis.prefix(), "two", 2);
    one.opened("ada").await.unwrap();
    one.opened("ada").await.unwrap();
    two.opened("ada").await.unwrap();
    one.closed("ada").await.unwrap();
    let mut counts = one.sockets("ada").await.unwrap();
    counts.sort();
    assert_eq!(counts, [("one@1".to_owned(), 1), ("two@2".to_owned(), 1)]);
    one.closed("ada").await.unwrap();
    two.closed("ada").await.unwrap();
    assert!(
        one.sockets("ada").await.unwrap().is_empty(),
        "closed ones leave nothing"
    );
    assert!(two.sockets("bob").await.unwrap().is_empty());
}

//! The fred client rides out a Redis restart.

use fred::prelude::*;
use ports_testing::contract::eventually;
use std::time::Duration;
use test_support::RedisProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_work_again_after_redis_restarts() {
    test_support::init_tracing();
    let mut redis = RedisProcess::start();
    let client = streams_adapter::connect(&redis.url(), Duration::from_secs(5))
        .await
        .unwrap();
    let _: () = client.set("k", "v", None, None, false).await.unwrap();
    redis.stop();
    assert!(client.get::<Option<String>, _>("k").await.is_err());
    redis.resume();
    eventually("a working connection", Duration::from_secs(20), || async {
        client
            .set::<(), _, _>("k2", "v", None, None, false)
            .await
            .ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_created_while_redis_is_down_connects_when_it_comes_up() {
    let mut redis = RedisProcess::start();
    redis.stop();
    let client = streams_adapter::connect(&redis.url(), Duration::from_millis(200))
        .await
        .unwrap();
    let fresh = client.clone_new();
    fresh.connect();
    redis.resume();
    for c in [&client, &fresh] {
        eventually("a working connection", Duration::from_secs(20), || async {
            c.set::<(), _, _>("k", "v", None, None, false).await.ok()
        })
        .await;
    }
}

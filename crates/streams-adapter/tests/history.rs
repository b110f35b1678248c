//! Topic history and presence on a real Redis pass the ports' contracts.

#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::time::Duration;
use streams_adapter::{RedisFanout, RedisPresence};
use test_support::TestRedis;

/// The adapter and the test prefix it lives under (cleaned up on drop).
struct Fixture<T> {
    inner: T,
    _redis: TestRedis,
}

impl<T> AsRef<T> for Fixture<T> {
    fn as_ref(&self) -> &T {
        &self.inner
    }
}

async fn client(redis: &TestRedis) -> streams_adapter::RedisClient {
    streams_adapter::connect(redis.url(), Duration::from_secs(5))
        .await
        .unwrap()
}

mod topic_history {
    use super::*;

    async fn make() -> Fixture<RedisFanout> {
        let redis = TestRedis::new().await;
        let inner = RedisFanout::new(&client(&redis).await, redis.prefix()).unwrap();
        Fixture {
            inner,
            _redis: redis,
        }
    }

    ports_testing::topic_history_contract!(make());
}

mod presence {
    use super::*;

    async fn make() -> Fixture<RedisPresence> {
        let redis = TestRedis::new().await;
        let inner = RedisPresence::new(client(&redis).await, redis.prefix());
        Fixture {
            inner,
            _redis: redis,
        }
    }

    ports_testing::presence_contract!(make());
}

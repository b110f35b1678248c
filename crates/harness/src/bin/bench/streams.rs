//! Scenario 4: 100,000 events published and consumed through one consumer
//! group, against redis-benchmark XADD and a Lua XREADGROUP + XACK ceiling.

use crate::report::Scenario;
use crate::tools;
use async_trait::async_trait;
use domain::{DomainEvent, EventEnvelope, FirebaseUid, UserDeleted, UserId};
use ports::{EventConsumer as _, EventHandler, EventPublisher as _, HandleEventError};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use streams_adapter::{ConsumerSettings, RedisStreamConsumer, RedisStreamPublisher};
use tokio_util::sync::CancellationToken;

struct Count(AtomicUsize);

#[async_trait]
impl EventHandler for Count {
    fn handles(&self, _: &domain::DomainEvent) -> bool {
        true
    }
    async fn handle(&self, _: &EventEnvelope) -> Result<(), HandleEventError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Reads 10 entries for a group and acknowledges them, in one round trip:
/// the most a consumer could do per call.
const READ_ACK_LUA: &str = "local r = redis.call('XREADGROUP', 'GROUP', 'g', 'c', 'COUNT', 10, 'STREAMS', KEYS[1], '>') \
if not r then return 0 end \
local n = 0 \
for _, e in ipairs(r[1][2]) do redis.call('XACK', KEYS[1], 'g', e[1]); n = n + 1 end \
return n";

pub(crate) async fn run(events: usize, out: &mut Vec<Scenario>) -> anyhow::Result<()> {
    let n = events.to_string();
    let key = format!("bench:xadd:{}", std::process::id());
    let xadd = tools::redis_benchmark(&[
        "-n",
        &n,
        "-c",
        "64",
        "-P",
        "1",
        "XADD",
        &key,
        "*",
        "event",
        "{\"v\":1,\"type\":\"user.deleted\",\"data\":{}}",
    ])?;
    // The ceiling: XREADGROUP COUNT 10 + XACK in one Lua call, over the XADDed entries.
    tools::redis_cli(&["XGROUP", "CREATE", &key, "g", "0"])?;
    let calls = (events / 10).to_string();
    let lua_calls = tools::redis_benchmark(&[
        "-n",
        &calls,
        "-c",
        "1",
        "-P",
        "1",
        "EVAL",
        READ_ACK_LUA,
        "1",
        &key,
    ])?;
    let ceiling = lua_calls * 10.0;
    tools::redis_cli(&["UNLINK", &key])?;

    let redis = test_support::TestRedis::new().await;
    let client = streams_adapter::connect(redis.url(), Duration::from_secs(5)).await?;
    let publisher = RedisStreamPublisher::new(client.clone(), redis.prefix());
    let event = domain::RawEvent::from(&EventEnvelope::new(
        DomainEvent::UserDeleted(UserDeleted {
            user_id: UserId::new(),
            uid: FirebaseUid::parse("bench")?,
        }),
        chrono::Utc::now(),
    ));
    let started = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|p| {
            let (publisher, mut e) = (publisher.clone(), event.clone());
            tokio::spawn(async move {
                for _ in (p..events).step_by(64) {
                    e.id = uuid::Uuid::now_v7();
                    publisher.publish(&e).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let published_per_s = events as f64 / started.elapsed().as_secs_f64();

    let perf = tools::Perf::attach(std::process::id(), "streams-consume");
    let counter = Arc::new(Count(AtomicUsize::new(0)));
    let consumer = RedisStreamConsumer::new(
        &client,
        ConsumerSettings {
            batch: 100,
            ..ConsumerSettings::new(redis.prefix(), "users", "bench", "bench-1")
        },
    );
    let stop = CancellationToken::new();
    let (h, s) = (counter.clone(), stop.clone());
    let started = Instant::now();
    let task = tokio::spawn(async move { consumer.run(h, s).await });
    let deadline = Instant::now() + Duration::from_secs(300);
    while counter.0.load(Ordering::Relaxed) < events {
        anyhow::ensure!(
            Instant::now() < deadline,
            "consumed only {} of {events}",
            counter.0.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let consumed_per_s = events as f64 / started.elapsed().as_secs_f64();
    drop(perf);
    stop.cancel();
    task.await??;

    let mut s = Scenario::new("4. event streams");
    s.ratio(
        "publish (XADD, 64 concurrent) vs redis-benchmark XADD -P 1",
        published_per_s,
        xadd,
        0.50,
        "events/s",
    );
    s.ratio(
        "consume + ack (one consumer, dedupe on) vs Lua XREADGROUP COUNT 10 + XACK",
        consumed_per_s,
        ceiling,
        0.25,
        "events/s",
    );
    out.push(s);
    Ok(())
}

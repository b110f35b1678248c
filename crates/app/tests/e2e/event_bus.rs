//! The transactional outbox feeding the Redis Streams bus: Postgres, relay,
//! streams and a consumer group, all real.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use async_trait::async_trait;
use domain::{EventEnvelope, FirebaseUid, ProfileDefaults, ProfilePatch};
use ports::{EventConsumer, EventHandler, HandleEventError, UserRepository};
use ports_testing::contract::eventually;
use postgres_adapter::{PgOutbox, PgSettings, PgUserRepository, build_pool};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use streams_adapter::{ConsumerSettings, RedisStreamConsumer, RedisStreamPublisher};
use test_support::{RedisProcess, TestDb, TestRedis};
use tokio_util::sync::CancellationToken;
use usecases::{OutboxRelay, RelaySettings};

#[derive(Default)]
struct Recorder(Mutex<Vec<(EventEnvelope, Instant)>>);

#[async_trait]
impl EventHandler for Recorder {
    fn handles(&self, _: &domain::DomainEvent) -> bool {
        true
    }
    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandleEventError> {
        self.0.lock().unwrap().push((event.clone(), Instant::now()));
        Ok(())
    }
}

impl Recorder {
    fn counts(&self) -> HashMap<uuid::Uuid, usize> {
        let mut m = HashMap::new();
        for (e, _) in self.0.lock().unwrap().iter() {
            *m.entry(e.id).or_default() += 1;
        }
        m
    }
}

struct Bus {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Bus {
    async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .unwrap()
                .unwrap();
        }
    }
}

fn relay_settings() -> RelaySettings {
    RelaySettings {
        batch: 50,
        idle_wait: Duration::from_secs(5),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(300),
        ..RelaySettings::default()
    }
}

/// `relays` relays and one consumer over `db` and the Redis at `redis_url`.
async fn start_bus(
    db: &TestDb,
    redis_url: &str,
    prefix: &str,
    relays: usize,
    recorder: Arc<Recorder>,
) -> Bus {
    let stop = CancellationToken::new();
    let client = streams_adapter::connect(redis_url, Duration::from_secs(2))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..relays {
        let pool = build_pool(&PgSettings::new(db.url())).unwrap();
        let relay = OutboxRelay::new(
            Arc::new(PgOutbox::new(pool, db.url())),
            Arc::new(RedisStreamPublisher::new(client.clone(), prefix)),
            relay_settings(),
        );
        let s = stop.clone();
        tasks.push(tokio::spawn(async move { relay.run(s).await }));
    }
    let consumer = RedisStreamConsumer::new(
        &client,
        ConsumerSettings {
            block: Duration::from_millis(200),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_millis(300),
            ..ConsumerSettings::new(prefix, "users", "test-group", "c1")
        },
    );
    let s = stop.clone();
    tasks.push(tokio::spawn(async move {
        consumer.run(recorder, s).await.unwrap();
    }));
    Bus { stop, tasks }
}

async fn create_users(db: &TestDb, n: usize, prefix: &str) {
    let users = PgUserRepository::new(build_pool(&PgSettings::new(db.url())).unwrap());
    for i in 0..n {
        let uid = FirebaseUid::parse(&format!("{prefix}-{i}")).unwrap();
        users
            .upsert_profile(&uid, &ProfilePatch::default(), &ProfileDefaults::default())
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_written_while_redis_is_down_all_arrive_once_it_is_back() {
    let db = TestDb::new().await;
    let mut redis = RedisProcess::start();
    let recorder = Arc::new(Recorder::default());
    let bus = start_bus(&db, &redis.url(), "t:", 1, recorder.clone()).await;
    redis.stop();
    create_users(&db, 30, "down").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(recorder.counts().is_empty());
    assert_eq!(
        db.scalar("SELECT count(*) AS value FROM outbox WHERE published_at IS NULL")
            .await,
        30,
        "nothing lost, nothing marked"
    );
    redis.resume();
    eventually("all 30 events", Duration::from_secs(30), || async {
        (recorder.counts().len() == 30).then_some(())
    })
    .await;
    bus.stop().await;
    assert!(recorder.counts().values().all(|n| *n == 1));
    assert_eq!(
        db.scalar("SELECT count(*) AS value FROM outbox WHERE published_at IS NULL")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_publish_every_row_and_the_consumer_handles_each_event_once() {
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    let recorder = Arc::new(Recorder::default());
    let bus = start_bus(&db, redis.url(), redis.prefix(), 2, recorder.clone()).await;
    create_users(&db, 200, "two").await;
    eventually("all 200 events", Duration::from_secs(30), || async {
        (recorder.counts().len() == 200).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    bus.stop().await;
    let counts = recorder.counts();
    assert_eq!(counts.len(), 200);
    assert!(counts.values().all(|n| *n == 1), "each event handled once");
    // And published once: the relays never claimed the same row (the
    // consumer's dedupe would hide a double publish, the stream does not).
    let stream = streams_adapter::stream_key(redis.prefix(), "users");
    let published: u64 = redis::cmd("XLEN")
        .arg(&stream)
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
    assert_eq!(published, 200, "each row published once");
    assert_eq!(
        db.scalar("SELECT count(*) AS value FROM outbox WHERE published_at IS NULL")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_row_reaches_the_consumer_quickly_thanks_to_listen_notify() {
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    let recorder = Arc::new(Recorder::default());
    // idle_wait is 5 s: only a notification can make delivery fast.
    let bus = start_bus(&db, redis.url(), redis.prefix(), 1, recorder.clone()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut latencies = Vec::new();
    for i in 0..10 {
        let before = Instant::now();
        create_users(&db, 1, &format!("fast{i}")).await;
        eventually("the event", Duration::from_secs(10), || async {
            (recorder.counts().len() == i + 1).then_some(())
        })
        .await;
        latencies.push(before.elapsed());
    }
    bus.stop().await;
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    eprintln!(
        "commit -> consumer latency p50 {p50:?}, max {:?}",
        latencies.last().unwrap()
    );
    assert!(
        p50 < Duration::from_secs(2),
        "p50 {p50:?}: the relay is not woken by NOTIFY"
    );
}

/// A bus that takes its time over every publish.
struct SlowBus {
    inner: RedisStreamPublisher,
    delay: Duration,
}

#[async_trait]
impl ports::EventPublisher for SlowBus {
    async fn publish(&self, event: &domain::RawEvent) -> Result<String, ports::PublishEventError> {
        tokio::time::sleep(self.delay).await;
        self.inner.publish(event).await
    }

    async fn publish_as_leader(
        &self,
        event: &domain::RawEvent,
        term: ports::LeaderTerm,
    ) -> Result<String, ports::PublishEventError> {
        tokio::time::sleep(self.delay).await;
        self.inner.publish_as_leader(event, term).await
    }

    async fn confirm(&self) -> Result<(), ports::PublishEventError> {
        self.inner.confirm().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_a_slow_bus_and_a_killed_leader_keep_every_users_events_in_order() {
    use domain::DisplayName;
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    let recorder = Arc::new(Recorder::default());
    // Only the consumer (no relays) from the shared helper.
    let bus = start_bus(&db, redis.url(), redis.prefix(), 0, recorder.clone()).await;
    // Twenty users, each created and then renamed four times, interleaved.
    let users = PgUserRepository::new(build_pool(&PgSettings::new(db.url())).unwrap());
    for round in 0..5 {
        for i in 0..20 {
            let uid = FirebaseUid::parse(&format!("order-{i}")).unwrap();
            let patch = ProfilePatch {
                display_name: Some(DisplayName::parse(&format!("v{round}")).unwrap()),
                ..ProfilePatch::default()
            };
            users
                .upsert_profile(&uid, &patch, &ProfileDefaults::default())
                .await
                .unwrap();
        }
    }
    let client = streams_adapter::connect(redis.url(), Duration::from_secs(2))
        .await
        .unwrap();
    let start_relay = || {
        let relay = OutboxRelay::new(
            Arc::new(PgOutbox::new(
                build_pool(&PgSettings::new(db.url())).unwrap(),
                db.url(),
            )),
            Arc::new(SlowBus {
                inner: RedisStreamPublisher::new(client.clone(), redis.prefix()),
                delay: Duration::from_millis(3),
            }),
            RelaySettings {
                batch: 7,
                takeover_poll: Duration::from_millis(50),
                ..relay_settings()
            },
        );
        let stop = CancellationToken::new();
        let s = stop.clone();
        (stop, tokio::spawn(async move { relay.run(s).await }))
    };
    // The first relay leads; the second stands by; the leader dies (its
    // task, and the session holding the lock, with it) a third of the way.
    let (_stop_first, first) = start_relay();
    eventually(
        "the first relay to publish",
        Duration::from_secs(20),
        || async { (!recorder.counts().is_empty()).then_some(()) },
    )
    .await;
    let (stop_second, second) = start_relay();
    eventually("a third of the events", Duration::from_secs(30), || async {
        (recorder.counts().len() >= 33).then_some(())
    })
    .await;
    first.abort();
    let _ = first.await;
    eventually("every event", Duration::from_secs(30), || async {
        (recorder.counts().len() == 100).then_some(())
    })
    .await;
    stop_second.cancel();
    second.await.unwrap();
    bus.stop().await;
    // The order of writing, as the consumer saw each event first (a
    // repeat after the takeover is allowed: at least once). Events carry
    // identifiers only: each one's place in the outbox is its order.
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<uuid::Uuid> = recorder
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(e, _)| seen.insert(e.id))
        .map(|(e, _)| e.id)
        .collect();
    assert_eq!(firsts.len(), 100);
    let mut seqs = Vec::new();
    for id in firsts {
        seqs.push(
            db.scalar(&format!(
                "SELECT seq AS value FROM outbox WHERE event_id = '{id}'"
            ))
            .await,
        );
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "handled in the order written: {seqs:?}"
    );
}

/// Records which relay appended each entry, and where.
struct Tap {
    inner: RedisStreamPublisher,
    delay: Duration,
    name: &'static str,
    log: Arc<Mutex<Vec<(&'static str, String)>>>,
}

#[async_trait]
impl ports::EventPublisher for Tap {
    async fn publish(&self, event: &domain::RawEvent) -> Result<String, ports::PublishEventError> {
        self.inner.publish(event).await
    }

    async fn publish_as_leader(
        &self,
        event: &domain::RawEvent,
        term: ports::LeaderTerm,
    ) -> Result<String, ports::PublishEventError> {
        tokio::time::sleep(self.delay).await;
        let id = self.inner.publish_as_leader(event, term).await?;
        self.log.lock().unwrap().push((self.name, id.clone()));
        Ok(id)
    }

    async fn confirm(&self) -> Result<(), ports::PublishEventError> {
        self.inner.confirm().await
    }
}

/// A stream entry id as a comparable pair.
fn entry_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap();
    (ms.parse().unwrap(), seq.parse().unwrap())
}

/// The leader's session is killed (as a pooler, a failover or a network
/// cut would) while it is in the middle of a batch. Postgres frees the
/// advisory lock at once and the standby leads within its poll; the old
/// leader does not know until its next pass. Its appends after the
/// successor's first are refused by the streams' fences: the two never
/// interleave on the stream, and every event still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_session_is_killed_mid_batch_never_appends_after_its_successor() {
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    let recorder = Arc::new(Recorder::default());
    let bus = start_bus(&db, redis.url(), redis.prefix(), 0, recorder.clone()).await;
    create_users(&db, 60, "fence").await;
    let client = streams_adapter::connect(redis.url(), Duration::from_secs(2))
        .await
        .unwrap();
    let log: Arc<Mutex<Vec<(&'static str, String)>>> = Arc::default();
    let start_relay = |name: &'static str, delay: Duration| {
        let relay = OutboxRelay::new(
            Arc::new(PgOutbox::new(
                build_pool(&PgSettings::new(db.url())).unwrap(),
                db.url(),
            )),
            Arc::new(Tap {
                inner: RedisStreamPublisher::new(client.clone(), redis.prefix()),
                delay,
                name,
                log: log.clone(),
            }),
            RelaySettings {
                // The whole backlog in one batch: the first relay is still
                // in it (40 ms an event, 2.4 s in all) when its session dies.
                batch: 100,
                takeover_poll: Duration::from_millis(50),
                ..relay_settings()
            },
        );
        let stop = CancellationToken::new();
        let s = stop.clone();
        (stop, tokio::spawn(async move { relay.run(s).await }))
    };
    let (stop_first, first) = start_relay("first", Duration::from_millis(40));
    eventually(
        "the first relay to publish",
        Duration::from_secs(20),
        || async { (log.lock().unwrap().len() >= 5).then_some(()) },
    )
    .await;
    let (stop_second, second) = start_relay("second", Duration::ZERO);
    // The second stands by; now the first's session dies.
    let killed = db
        .scalar(
            "SELECT count(pg_terminate_backend(pid)) AS value FROM pg_locks
              WHERE locktype = 'advisory' AND granted AND objsubid = 1
                AND ((classid::bigint << 32) | objid::bigint)
                    = hashtextextended('trellis:outbox-relay:' || current_schema(), 0)",
        )
        .await;
    assert_eq!(killed, 1, "the leader's session holds the lock");
    eventually("every event", Duration::from_secs(30), || async {
        (recorder.counts().len() == 60).then_some(())
    })
    .await;
    // Both relays are done with the backlog before the log is read.
    eventually("the outbox to drain", Duration::from_secs(30), || async {
        (db.scalar("SELECT count(*) AS value FROM outbox WHERE published_at IS NULL")
            .await
            == 0)
            .then_some(())
    })
    .await;
    stop_first.cancel();
    stop_second.cancel();
    first.await.unwrap();
    second.await.unwrap();
    bus.stop().await;
    let log = log.lock().unwrap().clone();
    let by = |name| -> Vec<(u64, u64)> {
        log.iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, id)| entry_id(id))
            .collect()
    };
    let (old, new) = (by("first"), by("second"));
    assert!(!new.is_empty(), "the standby never took over");
    let successor_began = new.iter().min().unwrap();
    let late: Vec<_> = old.iter().filter(|id| *id > successor_began).collect();
    assert!(
        late.is_empty(),
        "the old leader appended {} events after its successor began ({} before)",
        late.len(),
        old.len() - late.len()
    );
    assert!(
        old.len() < 60,
        "the old leader finished its batch: its session was not killed mid-batch"
    );
}

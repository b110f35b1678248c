//! The contracts of [`TopicHistory`] (with its [`Fanout`]) and
//! [`PresenceStore`].

use super::eventually;
use crate::realtime::topic_message;
use ports::realtime::{
    Fanout, FanoutMessage, FanoutSink, HistoryOptions, PresenceEntry, PresenceStore,
    StreamPosition, TopicHistory,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Inbox(Mutex<Vec<FanoutMessage>>);

impl FanoutSink for Inbox {
    fn deliver(&self, message: FanoutMessage) {
        self.0.lock().unwrap().push(message);
    }
}

const KEEP: HistoryOptions = HistoryOptions {
    size: 100,
    ttl: Duration::from_secs(60),
};

/// Subscribes a fresh inbox and proves it receives (a plain message
/// round trip), so what follows is not lost to a subscription in flight.
async fn subscribed<F: Fanout + ?Sized>(fanout: &F) -> (Arc<Inbox>, CancellationToken) {
    let inbox = Arc::new(Inbox::default());
    let stop = CancellationToken::new();
    fanout.subscribe(inbox.clone(), stop.clone()).await.unwrap();
    let probe = topic_message("probe", "probe", 0);
    eventually("the subscription to work", Duration::from_secs(10), || {
        let inbox = inbox.clone();
        let probe = probe.clone();
        async move {
            let _ = fanout.publish(&probe).await;
            let got = inbox
                .0
                .lock()
                .unwrap()
                .iter()
                .any(|m| m.notification.kind == "probe");
            got.then_some(())
        }
    })
    .await;
    inbox.0.lock().unwrap().clear();
    (inbox, stop)
}

pub async fn recorded_messages_reach_subscribers_in_offset_order<F>(fanout: &F)
where
    F: Fanout + TopicHistory + ?Sized,
{
    let (inbox, stop) = subscribed(fanout).await;
    let mut positions = Vec::new();
    for n in 1..=5 {
        let m = topic_message("public:a", "m", n);
        positions.push(
            fanout
                .publish_recorded("public:a", &m, &KEEP)
                .await
                .unwrap(),
        );
    }
    let offsets: Vec<u64> = positions.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, [1, 2, 3, 4, 5]);
    assert!(positions.iter().all(|p| p.epoch == positions[0].epoch));
    let got = eventually(
        "five recorded messages",
        Duration::from_secs(10),
        || async {
            let got: Vec<FanoutMessage> = inbox
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|m| m.notification.kind == "m")
                .cloned()
                .collect();
            (got.len() >= 5).then_some(got)
        },
    )
    .await;
    assert_eq!(got.len(), 5);
    let seen: Vec<Option<StreamPosition>> = got.iter().map(|m| m.position.clone()).collect();
    assert_eq!(seen, positions.into_iter().map(Some).collect::<Vec<_>>());
    stop.cancel();
}

pub async fn a_subscriber_recovers_exactly_what_it_missed<F>(fanout: &F)
where
    F: Fanout + TopicHistory + ?Sized,
{
    let empty = fanout.history("public:b", None, &KEEP).await.unwrap();
    assert_eq!(empty.position.offset, 0);
    assert!(!empty.recovered, "nothing was asked to recover");
    for n in 1..=3 {
        let m = topic_message("public:b", "old", n);
        fanout
            .publish_recorded("public:b", &m, &KEEP)
            .await
            .unwrap();
    }
    let seen = fanout
        .history("public:b", None, &KEEP)
        .await
        .unwrap()
        .position;
    assert_eq!(seen.offset, 3);
    assert_eq!(seen.epoch, empty.position.epoch, "a read keeps the epoch");
    for n in 4..=7 {
        let m = topic_message("public:b", "missed", n);
        fanout
            .publish_recorded("public:b", &m, &KEEP)
            .await
            .unwrap();
    }
    let read = fanout
        .history("public:b", Some(&seen), &KEEP)
        .await
        .unwrap();
    assert!(read.recovered);
    assert_eq!(read.position.offset, 7);
    let got: Vec<(u64, String, serde_json::Value)> = read
        .publications
        .iter()
        .map(|p| {
            (
                p.offset,
                p.notification.kind.clone(),
                p.notification.data["n"].clone(),
            )
        })
        .collect();
    let want: Vec<(u64, String, serde_json::Value)> = (4..=7)
        .map(|n| (n, "missed".to_owned(), n.into()))
        .collect();
    assert_eq!(got, want);
    let current = fanout
        .history("public:b", Some(&read.position), &KEEP)
        .await
        .unwrap();
    assert!(current.recovered && current.publications.is_empty());
}

pub async fn a_forgotten_topic_keeps_nothing_and_starts_a_new_epoch<F>(fanout: &F)
where
    F: Fanout + TopicHistory + ?Sized,
{
    for n in 1..=3 {
        let m = topic_message("user:gone", "profile.updated", n);
        fanout
            .publish_recorded("user:gone", &m, &KEEP)
            .await
            .unwrap();
    }
    let other = topic_message("user:stays", "profile.updated", 1);
    fanout
        .publish_recorded("user:stays", &other, &KEEP)
        .await
        .unwrap();
    let before = fanout.history("user:gone", None, &KEEP).await.unwrap();
    assert_eq!(before.position.offset, 3);
    fanout.forget("user:gone").await.unwrap();
    let start = StreamPosition {
        offset: 0,
        epoch: before.position.epoch.clone(),
    };
    let after = fanout
        .history("user:gone", Some(&start), &KEEP)
        .await
        .unwrap();
    assert!(after.publications.is_empty(), "{:?}", after.publications);
    assert!(!after.recovered);
    assert_ne!(after.position.epoch, before.position.epoch);
    assert_eq!(after.position.offset, 0);
    let kept = fanout.history("user:stays", None, &KEEP).await.unwrap();
    assert_eq!(kept.position.offset, 1, "other topics are untouched");
}

pub async fn what_history_no_longer_covers_is_not_recovered<F>(fanout: &F)
where
    F: Fanout + TopicHistory + ?Sized,
{
    let small = HistoryOptions {
        size: 3,
        ttl: Duration::from_secs(60),
    };
    let mut last = None;
    for n in 1..=5 {
        let m = topic_message("public:c", "m", n);
        last = Some(
            fanout
                .publish_recorded("public:c", &m, &small)
                .await
                .unwrap(),
        );
    }
    let last = last.unwrap();
    let at = |offset| StreamPosition {
        offset,
        epoch: last.epoch.clone(),
    };
    let trimmed = fanout
        .history("public:c", Some(&at(1)), &small)
        .await
        .unwrap();
    assert!(!trimmed.recovered, "offset 2 was trimmed away");
    assert!(trimmed.publications.is_empty());
    let kept = fanout
        .history("public:c", Some(&at(2)), &small)
        .await
        .unwrap();
    assert!(kept.recovered);
    assert_eq!(
        kept.publications
            .iter()
            .map(|p| p.offset)
            .collect::<Vec<_>>(),
        [3, 4, 5]
    );
    let other = StreamPosition {
        offset: 4,
        epoch: format!("{}x", last.epoch),
    };
    let read = fanout
        .history("public:c", Some(&other), &small)
        .await
        .unwrap();
    assert!(!read.recovered, "another epoch's offsets mean nothing");
    let ahead = fanout
        .history("public:c", Some(&at(9)), &small)
        .await
        .unwrap();
    assert!(!ahead.recovered, "an offset the topic never reached");
}

pub async fn history_expires_but_the_position_stays<F>(fanout: &F)
where
    F: Fanout + TopicHistory + ?Sized,
{
    let brief = HistoryOptions {
        size: 10,
        ttl: Duration::from_millis(200),
    };
    for n in 1..=2 {
        let m = topic_message("public:d", "m", n);
        fanout
            .publish_recorded("public:d", &m, &brief)
            .await
            .unwrap();
    }
    let start = StreamPosition {
        offset: 0,
        epoch: fanout
            .history("public:d", None, &brief)
            .await
            .unwrap()
            .position
            .epoch,
    };
    let read = eventually("the history to expire", Duration::from_secs(5), || async {
        let r = fanout
            .history("public:d", Some(&start), &brief)
            .await
            .unwrap();
        (!r.recovered).then_some(r)
    })
    .await;
    assert_eq!(read.position, StreamPosition { offset: 2, ..start });
}

fn entry(client: &str, uid: &str) -> PresenceEntry {
    PresenceEntry {
        client: client.into(),
        uid: uid.into(),
    }
}

pub async fn presence_lists_joined_clients_until_they_leave(store: &dyn PresenceStore) {
    let ttl = Duration::from_secs(60);
    store
        .join(
            &[
                ("room:1".into(), entry("i1/1", "alice")),
                ("room:1".into(), entry("i2/7", "bob")),
                ("room:2".into(), entry("i1/1", "alice")),
            ],
            ttl,
        )
        .await
        .unwrap();
    assert_eq!(
        store.present("room:1").await.unwrap(),
        [entry("i1/1", "alice"), entry("i2/7", "bob")]
    );
    store.leave("room:1", "i1/1").await.unwrap();
    assert_eq!(
        store.present("room:1").await.unwrap(),
        [entry("i2/7", "bob")]
    );
    assert_eq!(
        store.present("room:2").await.unwrap(),
        [entry("i1/1", "alice")]
    );
    assert!(store.present("room:3").await.unwrap().is_empty());
}

pub async fn presence_entries_expire_unless_refreshed(store: &dyn PresenceStore) {
    let ttl = Duration::from_millis(400);
    store
        .join(&[("room:9".into(), entry("dead/1", "ghost"))], ttl)
        .await
        .unwrap();
    // The live client refreshes at a quarter of the ttl, as the hub does.
    let started = std::time::Instant::now();
    while started.elapsed() < ttl * 3 {
        store
            .join(&[("room:9".into(), entry("live/1", "alice"))], ttl)
            .await
            .unwrap();
        tokio::time::sleep(ttl / 4).await;
    }
    assert_eq!(
        store.present("room:9").await.unwrap(),
        [entry("live/1", "alice")]
    );
}

/// One `#[tokio::test]` per case, for a `Fanout + TopicHistory`.
#[macro_export]
macro_rules! topic_history_contract {
    ($make:expr) => {
        macro_rules! topic_history_case {
            ($name:ident) => {
                #[tokio::test]
                async fn $name() {
                    let fanout = $make.await;
                    $crate::contract::realtime::$name(fanout.as_ref()).await;
                }
            };
        }
        topic_history_case!(recorded_messages_reach_subscribers_in_offset_order);
        topic_history_case!(a_subscriber_recovers_exactly_what_it_missed);
        topic_history_case!(what_history_no_longer_covers_is_not_recovered);
        topic_history_case!(history_expires_but_the_position_stays);
        topic_history_case!(a_forgotten_topic_keeps_nothing_and_starts_a_new_epoch);
    };
}

/// One `#[tokio::test]` per case, for a `PresenceStore`.
#[macro_export]
macro_rules! presence_contract {
    ($make:expr) => {
        macro_rules! presence_case {
            ($name:ident) => {
                #[tokio::test]
                async fn $name() {
                    let store = $make.await;
                    $crate::contract::realtime::$name(store.as_ref()).await;
                }
            };
        }
        presence_case!(presence_lists_joined_clients_until_they_leave);
        presence_case!(presence_entries_expire_unless_refreshed);
    };
}

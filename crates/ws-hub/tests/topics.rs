//! Recoverable topics, presence, client publishing and acknowledged
//! delivery, through a real server and real WebSocket clients, with the
//! in-process fan-out (the same contract as Redis's).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use async_trait::async_trait;
use domain::FirebaseUid;
use ports::{
    Audience, Fanout as _, HistoryOptions, NamespaceOptions, Notification, Notifier as _,
    NotifyError, Realtime as _, SocketDelivery, StreamPosition, TopicPolicy,
};
use ports_testing::contract::eventually;
use ports_testing::{InMemoryFanout, InMemoryPresence};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use ws_hub::{HubNotifier, HubSettings};

#[expect(dead_code, reason = "this file does not read close codes")]
mod support;
use support::*;

/// `room:<id>`: members only (the application's port, here a fixed list).
struct Rooms(HashSet<(String, String)>);

#[async_trait]
impl TopicPolicy for Rooms {
    async fn may_subscribe(&self, uid: &FirebaseUid, name: &str) -> Result<bool, NotifyError> {
        Ok(self.0.contains(&(name.to_owned(), uid.as_str().to_owned())))
    }
}

const ROOM_HISTORY: HistoryOptions = HistoryOptions {
    size: 3,
    ttl: Duration::from_secs(60),
};

/// A hub with history and presence in process, and `room:1` for alice
/// and bob (history of 3, presence, join/leave, client publishing).
async fn realtime_server(hub_settings: HubSettings) -> (Server, HubNotifier) {
    let fanout = Arc::new(InMemoryFanout::new());
    let f = fanout.clone();
    let s = server_with(hub_settings, move |hub| {
        let members = ["alice", "bob"].map(|u| ("1".to_owned(), u.to_owned()));
        hub.fanout(f.clone())
            .history(f)
            .presence(Arc::new(InMemoryPresence::new()))
            .namespace(
                "room",
                NamespaceOptions {
                    history: Some(ROOM_HISTORY),
                    presence: true,
                    join_leave: true,
                    client_publish: true,
                },
                Arc::new(Rooms(members.into_iter().collect())),
            )
    })
    .await;
    fanout
        .subscribe(
            Arc::new(s.hub.clone()),
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap();
    let notifier = HubNotifier::new(s.hub.clone());
    (s, notifier)
}

fn uid(u: &str) -> FirebaseUid {
    FirebaseUid::parse(u).unwrap()
}

fn note(n: u64) -> Notification {
    Notification::new("note", json!({"n": n}))
}

/// Subscribes and returns the `subscribed` reply's data.
async fn subscribe(ws: &mut Ws, topic: &str, since: Option<&Value>) -> Value {
    let mut data = json!({"topic": topic});
    if let Some(since) = since {
        data["since"] = since.clone();
    }
    send(ws, json!({"type": "subscribe", "id": "s", "data": data})).await;
    // Presence notices of the topic may come first (no offsets: not part
    // of the history).
    let mut reply = recv(ws).await;
    while reply["type"] == "join" {
        reply = recv(ws).await;
    }
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(reply["id"], "s");
    reply["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_gets_what_it_missed_in_order_then_live_messages() {
    let (s, notifier) = realtime_server(settings()).await;
    let alice = Audience::User(uid("alice"));
    let mut phone = connect(&s, "alice").await;
    let first = subscribe(&mut phone, "user:alice", None).await;
    assert_eq!(first["offset"], 0);
    assert_eq!(first["recovered"], false);
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    notifier.notify(&alice, &note(1)).await.unwrap();
    assert_eq!(
        recv(&mut phone).await,
        json!({"type": "note", "topic": "user:alice", "offset": 1, "epoch": epoch, "data": {"n": 1}})
    );
    phone.close(None).await.unwrap();
    drop(phone);
    eventually("the socket to go", Duration::from_secs(5), || async {
        (s.hub.connection_count() == 0).then_some(())
    })
    .await;
    for n in 2..=4 {
        notifier.notify(&alice, &note(n)).await.unwrap();
    }
    let mut phone = connect(&s, "alice").await;
    let back = subscribe(
        &mut phone,
        "user:alice",
        Some(&json!({"offset": 1, "epoch": epoch})),
    )
    .await;
    assert_eq!(
        back,
        json!({"topic": "user:alice", "offset": 4, "epoch": epoch, "recovered": true})
    );
    for n in 2..=4 {
        let m = recv(&mut phone).await;
        assert_eq!(
            (m["offset"].as_u64(), m["data"]["n"].as_u64()),
            (Some(n), Some(n))
        );
    }
    notifier.notify(&alice, &note(5)).await.unwrap();
    assert_eq!(recv(&mut phone).await["offset"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_seam_between_recovery_and_live_messages_has_no_gap_and_no_duplicate() {
    const TOTAL: u64 = 400;
    // Room for every message: this is about the seam, not slow clients.
    let (s, notifier) = realtime_server(HubSettings {
        outbound_queue: 1024,
        user_history: Some(HistoryOptions {
            size: 1000,
            ttl: Duration::from_secs(60),
        }),
        ..settings()
    })
    .await;
    let topic = "user:bob";
    let mut ws = connect(&s, "bob").await;
    let epoch = subscribe(&mut ws, topic, None).await["epoch"].clone();
    // A publisher runs while the client resubscribes mid-stream.
    let publisher = {
        let notifier = notifier.clone();
        tokio::spawn(async move {
            for n in 1..=TOTAL {
                notifier
                    .notify(&Audience::User(uid("bob")), &note(n))
                    .await
                    .unwrap();
                if n % 5 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    let mut last = 0;
    // Read a few live, then resubscribe from an earlier point.
    while last < 50 {
        let m = recv(&mut ws).await;
        if m["type"] == "note" {
            last = m["offset"].as_u64().unwrap();
        }
    }
    let since = last - 10;
    send(
        &mut ws,
        json!({"type": "subscribe", "id": "again", "data": {"topic": topic, "since": {"offset": since, "epoch": epoch}}}),
    )
    .await;
    // Until the reply, live messages of the old subscription keep coming.
    loop {
        let m = recv(&mut ws).await;
        if m["type"] == "subscribed" {
            assert_eq!(m["data"]["recovered"], true, "{m}");
            break;
        }
    }
    let mut want = since + 1;
    while want <= TOTAL {
        let m = recv(&mut ws).await;
        assert_eq!(m["type"], "note", "{m}");
        assert_eq!(m["offset"].as_u64(), Some(want), "{m}");
        assert_eq!(m["data"]["n"].as_u64(), Some(want));
        want += 1;
    }
    publisher.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_history_is_gone_is_told_recovered_false() {
    let (s, notifier) = realtime_server(settings()).await;
    let mut ws = connect(&s, "alice").await;
    let epoch = subscribe(&mut ws, "room:1", None).await["epoch"].clone();
    for n in 1..=5 {
        notifier.publish("room:1", &note(n)).await.unwrap();
    }
    let mut other = connect(&s, "bob").await;
    // The room keeps 3: from offset 1, offset 2 is gone.
    let trimmed = subscribe(
        &mut other,
        "room:1",
        Some(&json!({"offset": 1, "epoch": epoch})),
    )
    .await;
    assert_eq!(trimmed["recovered"], false);
    assert_eq!(trimmed["offset"], 5);
    // Another epoch: the history was lost.
    let lost = subscribe(
        &mut other,
        "room:1",
        Some(&json!({"offset": 4, "epoch": "gone"})),
    )
    .await;
    assert_eq!(lost["recovered"], false);
    // Nothing of the past followed either reply; the next is live.
    notifier.publish("room:1", &note(6)).await.unwrap();
    let next = loop {
        let m = recv(&mut other).await;
        if m["type"] == "note" {
            break m;
        }
    };
    assert_eq!(next["offset"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_that_lost_messages_is_told_to_resubscribe() {
    let (s, _) = realtime_server(settings()).await;
    let mut ws = connect(&s, "alice").await;
    let epoch = subscribe(&mut ws, "room:1", None).await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let at = |offset| StreamPosition {
        offset,
        epoch: epoch.clone(),
    };
    assert_eq!(recv(&mut ws).await["type"], "join", "alice's own");
    s.hub.deliver_recorded("room:1", &at(1), &note(1));
    assert_eq!(recv(&mut ws).await["offset"], 1);
    // Offset 2 never arrives (the fan-out dropped it).
    s.hub.deliver_recorded("room:1", &at(3), &note(3));
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "unsubscribed", "data": {"topic": "room:1", "reason": ws_hub::INSUFFICIENT_STATE}})
    );
    assert_eq!(s.hub.deliver_recorded("room:1", &at(4), &note(4)), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_lists_subscribers_and_others_see_them_join_and_leave() {
    let (s, notifier) = realtime_server(settings()).await;
    let mut alice = connect(&s, "alice").await;
    subscribe(&mut alice, "room:1", None).await;
    let joined = recv(&mut alice).await;
    assert_eq!(joined["type"], "join");
    assert_eq!(joined["topic"], "room:1");
    assert_eq!(joined["data"]["uid"], "alice");
    let mut carol = connect(&s, "carol").await;
    send(
        &mut carol,
        json!({"type": "subscribe", "id": "c", "data": {"topic": "room:1"}}),
    )
    .await;
    assert_eq!(recv(&mut carol).await["data"]["code"], "forbidden_topic");
    send(
        &mut carol,
        json!({"type": "presence", "id": "p", "data": {"topic": "room:1"}}),
    )
    .await;
    assert_eq!(recv(&mut carol).await["data"]["code"], "forbidden_topic");
    let mut bob = connect(&s, "bob").await;
    subscribe(&mut bob, "room:1", None).await;
    let seen = recv(&mut alice).await;
    assert_eq!(
        (seen["type"].as_str(), seen["data"]["uid"].as_str()),
        (Some("join"), Some("bob"))
    );
    send(
        &mut alice,
        json!({"type": "presence", "id": "p", "data": {"topic": "room:1"}}),
    )
    .await;
    let present = recv(&mut alice).await;
    assert_eq!(present["type"], "presence");
    let uids: Vec<&str> = present["data"]["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["uid"].as_str().unwrap())
        .collect();
    assert_eq!(
        uids.iter().copied().collect::<HashSet<_>>(),
        HashSet::from(["alice", "bob"])
    );
    assert_eq!(notifier.presence("room:1").await.unwrap().len(), 2);
    bob.close(None).await.unwrap();
    let left = recv(&mut alice).await;
    assert_eq!(
        (left["type"].as_str(), left["data"]["uid"].as_str()),
        (Some("leave"), Some("bob"))
    );
    let after = notifier.presence("room:1").await.unwrap();
    assert_eq!(
        after.iter().map(|e| e.uid.as_str()).collect::<Vec<_>>(),
        ["alice"]
    );
    // A namespace without presence says so.
    send(
        &mut alice,
        json!({"type": "presence", "id": "q", "data": {"topic": "public:x"}}),
    )
    .await;
    assert_eq!(recv(&mut alice).await["data"]["code"], "presence_off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_publish_only_where_the_namespace_allows() {
    let (s, _) = realtime_server(settings()).await;
    let mut alice = connect(&s, "alice").await;
    let mut bob = connect(&s, "bob").await;
    subscribe(&mut bob, "room:1", None).await;
    assert_eq!(recv(&mut bob).await["type"], "join");
    send(
        &mut alice,
        json!({"type": "publish", "id": "m", "data": {"topic": "room:1", "data": {"text": "hi"}}}),
    )
    .await;
    let published = recv(&mut alice).await;
    assert_eq!(published["type"], "published", "{published}");
    assert_eq!(published["data"]["offset"], 1);
    let got = recv(&mut bob).await;
    assert_eq!(got["type"], "publication");
    assert_eq!(got["offset"], 1);
    assert_eq!(got["data"], json!({"uid": "alice", "data": {"text": "hi"}}));
    for topic in ["public:news", "user:alice"] {
        send(
            &mut alice,
            json!({"type": "publish", "id": "x", "data": {"topic": topic, "data": 1}}),
        )
        .await;
        assert_eq!(
            recv(&mut alice).await["data"]["code"],
            "publish_forbidden",
            "{topic}"
        );
    }
    let mut carol = connect(&s, "carol").await;
    send(
        &mut carol,
        json!({"type": "publish", "id": "x", "data": {"topic": "room:1", "data": 1}}),
    )
    .await;
    assert_eq!(recv(&mut carol).await["data"]["code"], "forbidden_topic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_is_acked_or_reported_unacknowledged_or_offline() {
    let (s, notifier) = realtime_server(settings()).await;
    let wait = Duration::from_millis(500);
    let offline = notifier
        .deliver(&uid("alice"), "d0", &note(0), wait)
        .await
        .unwrap();
    assert_eq!(offline, SocketDelivery::Offline);

    let mut alice = connect(&s, "alice").await;
    let mut bob = connect(&s, "bob").await;
    eventually("two sockets", Duration::from_secs(5), || async {
        (s.hub.connection_count() == 2).then_some(())
    })
    .await;
    // Alice's socket acks what it gets.
    let acker = tokio::spawn(async move {
        let m = recv(&mut alice).await;
        let delivery = m["delivery"].as_str().unwrap().to_owned();
        send(
            &mut alice,
            json!({"type": "ack", "data": {"delivery": delivery}}),
        )
        .await;
        (m, alice)
    });
    let acked = notifier
        .deliver(&uid("alice"), "d1", &note(1), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(matches!(acked, SocketDelivery::Acked(_)), "{acked:?}");
    let (m, mut alice) = acker.await.unwrap();
    assert_eq!(m["delivery"], "d1");
    assert_eq!(m["topic"], "user:alice");

    // Bob acking alice's delivery id does not count; alice stays silent.
    let silent = tokio::spawn({
        let notifier = notifier.clone();
        async move { notifier.deliver(&uid("alice"), "d2", &note(2), wait).await }
    });
    assert_eq!(recv(&mut alice).await["delivery"], "d2");
    send(&mut bob, json!({"type": "ack", "data": {"delivery": "d2"}})).await;
    assert_eq!(
        silent.await.unwrap().unwrap(),
        SocketDelivery::Unacknowledged
    );
    send(&mut bob, json!({"type": "ack", "data": {}})).await;
    assert_eq!(recv(&mut bob).await["data"]["code"], "invalid_data");
}

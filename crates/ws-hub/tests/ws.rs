//! The hub behind a real actix server, driven by real WebSocket clients.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use async_trait::async_trait;
use futures_util::{SinkExt as _, StreamExt as _};
use ports::{Audience, Notification, Notifier};
use ports_testing::contract::eventually;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use ws_hub::{HandlerContext, HandlerError, HubNotifier, HubSettings, MessageHandler, Reply};

mod support;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upgrade_needs_a_valid_token_from_header_query_or_protocol() {
    let s = server().await;
    let url = format!("ws://127.0.0.1:{}/ws", s.port);
    let with = |name: &'static str, value: &str| {
        let mut r = url.clone().into_client_request().unwrap();
        r.headers_mut().insert(name, value.parse().unwrap());
        r
    };
    for req in [
        url.clone().into_client_request().unwrap(),
        with("authorization", "Bearer wrong"),
        format!("{url}?access_token=wrong")
            .into_client_request()
            .unwrap(),
        with("sec-websocket-protocol", "bearer, wrong"),
        // The protocol name is matched exactly, as the handshake echoes it.
        with("sec-websocket-protocol", "Bearer, token-bob"),
    ] {
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                assert_eq!(res.status(), 401);
                assert_eq!(
                    res.headers()["www-authenticate"],
                    "Bearer error=\"invalid_token\""
                );
            }
            other => panic!("expected a 401, got {other:?}"),
        }
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{url}?access_token=token-alice"))
        .await
        .unwrap();
    send(&mut ws, json!({"type": "echo", "id": "q", "data": 1})).await;
    assert_eq!(recv(&mut ws).await["id"], "q");

    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "bearer, token-bob".parse().unwrap(),
    );
    let (mut ws, res) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        res.headers()["sec-websocket-protocol"],
        "bearer",
        "only the protocol name is echoed"
    );
    send(&mut ws, json!({"type": "echo", "data": "hi"})).await;
    assert_eq!(recv(&mut ws).await["data"], "hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_replies_with_the_correlation_id() {
    let s = server().await;
    let mut ws = connect(&s, "alice").await;
    send(
        &mut ws,
        json!({"type": "echo", "id": "42", "data": {"hello": "world"}}),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "echo", "id": "42", "data": {"hello": "world"}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_error_envelopes_and_the_connection_stays_open() {
    let s = server().await;
    let mut ws = connect(&s, "alice").await;
    ws.send(Message::text("this is not json")).await.unwrap();
    assert_eq!(recv(&mut ws).await["data"]["code"], "malformed");
    send(&mut ws, json!({"type": "teleport", "id": "t1"})).await;
    let e = recv(&mut ws).await;
    assert_eq!(
        (
            e["type"].as_str(),
            e["id"].as_str(),
            e["data"]["code"].as_str()
        ),
        (Some("error"), Some("t1"), Some("unknown_type"))
    );
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(recv(&mut ws).await["data"]["code"], "binary_not_supported");
    for i in 0..1000 {
        send(&mut ws, json!({"type": format!("nope-{i}")})).await;
    }
    for _ in 0..1000 {
        assert_eq!(recv(&mut ws).await["data"]["code"], "unknown_type");
    }
    send(&mut ws, json!({"type": "echo", "id": "still"})).await;
    assert_eq!(recv(&mut ws).await["id"], "still");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_invalid_frames_close_with_the_right_code_while_others_are_served() {
    let s = server().await;
    let mut bystander = connect(&s, "bob").await;

    let mut big = connect(&s, "alice").await;
    big.send(Message::text("x".repeat(70 * 1024)))
        .await
        .unwrap();
    assert_eq!(close_code(&mut big).await, 1009);

    let mut fragmented = connect(&s, "alice").await;
    let chunk = "y".repeat(30 * 1024);
    fragmented
        .send(Message::Frame(Frame::message(
            chunk.clone(),
            OpCode::Data(Data::Text),
            false,
        )))
        .await
        .unwrap();
    fragmented
        .send(Message::Frame(Frame::message(
            chunk.clone(),
            OpCode::Data(Data::Continue),
            false,
        )))
        .await
        .unwrap();
    fragmented
        .send(Message::Frame(Frame::message(
            chunk,
            OpCode::Data(Data::Continue),
            true,
        )))
        .await
        .unwrap();
    assert_eq!(
        close_code(&mut fragmented).await,
        1009,
        "reassembled fragments count against the limit"
    );

    let mut invalid = connect(&s, "alice").await;
    invalid
        .send(Message::Frame(Frame::message(
            vec![0xff, 0xfe, 0x41],
            OpCode::Data(Data::Text),
            true,
        )))
        .await
        .unwrap();
    assert_eq!(close_code(&mut invalid).await, 1007);

    send(&mut bystander, json!({"type": "echo", "id": "ok"})).await;
    assert_eq!(recv(&mut bystander).await["id"], "ok");
}

/// Sleeps a little and tracks how many calls run at once.
#[derive(Default)]
struct Busy {
    now: AtomicUsize,
    max: AtomicUsize,
}

#[async_trait]
impl MessageHandler for Busy {
    async fn handle(&self, _: &HandlerContext, data: Value) -> Result<Option<Reply>, HandlerError> {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        Ok(Some(Reply::new("done", data)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_handler_calls_never_exceed_the_bound() {
    let busy = Arc::new(Busy::default());
    let b = busy.clone();
    let s = server_with(
        HubSettings {
            handler_concurrency: 8,
            ..settings()
        },
        move |hub| hub.on("work", b),
    )
    .await;
    let mut clients = Vec::new();
    for i in 0..10 {
        let mut ws = connect(&s, if i % 2 == 0 { "alice" } else { "bob" }).await;
        clients.push(tokio::spawn(async move {
            for j in 0..100 {
                send(
                    &mut ws,
                    json!({"type": "work", "id": format!("{i}-{j}"), "data": j}),
                )
                .await;
            }
            let mut got = 0;
            while got < 100 {
                let r = recv(&mut ws).await;
                assert_eq!(r["type"], "done");
                got += 1;
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let max = busy.max.load(Ordering::SeqCst);
    assert!(max <= 8, "{max} calls at once, over the bound of 8");
    assert!(max >= 4, "the bound was actually used: {max}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_never_reads_is_disconnected_while_others_keep_receiving() {
    let s = server_with(
        HubSettings {
            outbound_queue: 32,
            ..settings()
        },
        |hub| hub,
    )
    .await;
    let mut slow = connect(&s, "alice").await;
    send(
        &mut slow,
        json!({"type": "subscribe", "data": {"topic": "public:feed"}}),
    )
    .await;
    assert_eq!(recv(&mut slow).await["type"], "subscribed");
    let mut fast = connect(&s, "bob").await;
    send(
        &mut fast,
        json!({"type": "subscribe", "data": {"topic": "public:feed"}}),
    )
    .await;
    assert_eq!(recv(&mut fast).await["type"], "subscribed");

    // 64 MiB: more than the kernel buffers between us and the slow client
    // (up to 32 MiB of receive buffer here), so its queue must fill.
    const N: usize = 4000;
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < N {
            let m = recv(&mut fast).await;
            assert_eq!(m["type"], "tick");
            got += 1;
        }
        (got, fast)
    });
    let payload = "z".repeat(16 * 1024);
    let mut delivered = 0;
    for i in 0..N {
        delivered += s.hub.deliver_local(
            &Audience::Topic("public:feed".into()),
            &Notification::new("tick", json!({"i": i, "pad": payload})),
        );
        if i % 16 == 15 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert!(
        delivered < 2 * N,
        "the slow client stopped getting messages: {delivered} of {}",
        2 * N
    );
    let (got, _fast) = reader.await.unwrap();
    assert_eq!(got, N, "the fast client got everything");
    eventually(
        "the slow client to be dropped",
        Duration::from_secs(10),
        || async { (s.hub.connection_count() == 1).then_some(()) },
    )
    .await;
    // Its socket is really gone: once it reads again it gets what was
    // already buffered for it, then the end of the connection.
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        let mut ticks = 0;
        loop {
            match slow.next().await {
                Some(Ok(Message::Text(_))) => ticks += 1,
                Some(Ok(Message::Close(frame))) => break (ticks, frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break (ticks, None),
            }
        }
    })
    .await
    .expect("the slow client's connection ends");
    assert!(ended.0 < N, "it did not get everything: {} ticks", ended.0);
    assert!(
        matches!(ended.1, None | Some(1008)),
        "closed with {:?}",
        ended.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_connection_never_runs_more_handlers_than_its_own_bound() {
    let busy = Arc::new(Busy::default());
    let b = busy.clone();
    let s = server_with(
        HubSettings {
            handler_concurrency: 64,
            per_connection_concurrency: 2,
            ..settings()
        },
        move |hub| hub.on("work", b),
    )
    .await;
    let mut ws = connect(&s, "alice").await;
    for j in 0..60 {
        send(
            &mut ws,
            json!({"type": "work", "id": j.to_string(), "data": j}),
        )
        .await;
    }
    for _ in 0..60 {
        assert_eq!(recv(&mut ws).await["type"], "done");
    }
    assert_eq!(
        busy.max.load(Ordering::SeqCst),
        2,
        "the per-connection bound, used and kept"
    );
}

/// Holds a handler slot until its connection goes away, and says so.
#[derive(Default)]
struct Hold {
    started: AtomicUsize,
    cancelled: AtomicUsize,
}

#[async_trait]
impl MessageHandler for Hold {
    async fn handle(&self, ctx: &HandlerContext, _: Value) -> Result<Option<Reply>, HandlerError> {
        /// Counts the call's end however it ends: seeing the token, or
        /// being dropped by the hub when the token fires.
        struct Ended<'a>(&'a AtomicUsize);
        impl Drop for Ended<'_> {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.started.fetch_add(1, Ordering::SeqCst);
        let _ended = Ended(&self.cancelled);
        ctx.cancel.cancelled().await;
        Ok(None)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_waiting_for_a_handler_slot_keeps_receiving_and_stays_alive() {
    let hold = Arc::new(Hold::default());
    let h = hold.clone();
    let s = server_with(
        HubSettings {
            handler_concurrency: 1,
            ping_interval: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(600),
            ..settings()
        },
        move |hub| hub.on("hold", h),
    )
    .await;
    // Alice takes the only hub-wide slot and keeps it.
    let mut alice = connect(&s, "alice").await;
    send(&mut alice, json!({"type": "hold"})).await;
    eventually(
        "alice's handler to start",
        Duration::from_secs(5),
        || async { (hold.started.load(Ordering::SeqCst) == 1).then_some(()) },
    )
    .await;
    // She keeps reading (so answers pings) until she leaves.
    let alice = tokio::spawn(async move { while alice.next().await.is_some() {} });
    // Bob's call waits for that slot; his socket must not.
    let mut bob = connect(&s, "bob").await;
    send(&mut bob, json!({"type": "hold", "id": "waiting"})).await;
    let bob_uid = domain::FirebaseUid::parse("bob").unwrap();
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.hub.deliver_local(
            &Audience::User(bob_uid.clone()),
            &Notification::new("tick", json!(i)),
        );
        let m = recv(&mut bob).await; // also answers the server's pings
        assert_eq!(m, json!({"type": "tick", "data": i}));
    }
    assert_eq!(
        s.hub.connection_count(),
        2,
        "1.5 s past the idle timeout, both still open"
    );
    assert_eq!(
        hold.started.load(Ordering::SeqCst),
        1,
        "bob's call still waits"
    );
    // Alice leaves: her handler is cancelled, and bob's call gets the slot.
    alice.abort();
    eventually(
        "alice's handler to be cancelled",
        Duration::from_secs(5),
        || async { (hold.cancelled.load(Ordering::SeqCst) == 1).then_some(()) },
    )
    .await;
    eventually("bob's call to start", Duration::from_secs(5), || async {
        (hold.started.load(Ordering::SeqCst) == 2).then_some(())
    })
    .await;
    s.hub.shutdown();
    assert_eq!(close_code(&mut bob).await, 1001);
    eventually(
        "bob's handler to be cancelled by the shutdown",
        Duration::from_secs(5),
        || async { (hold.cancelled.load(Ordering::SeqCst) == 2).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_answers_pings_outlives_the_idle_timeout() {
    let s = server_with(
        HubSettings {
            ping_interval: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(400),
            ..settings()
        },
        |hub| hub,
    )
    .await;
    let mut ws = connect(&s, "alice").await;
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(msg) = tokio::time::timeout_at(until, ws.next()).await {
        match msg {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("only pings expected, got {other:?}"),
        }
    }
    assert!(pings >= 5, "the server pings every 100 ms: {pings} pings");
    assert_eq!(s.hub.connection_count(), 1, "answered pings keep it open");
    send(&mut ws, json!({"type": "echo", "id": "still-here"})).await;
    assert_eq!(recv(&mut ws).await["id"], "still-here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_cannot_hold_more_sockets_than_the_limit() {
    let s = server_with(
        HubSettings {
            max_connections_per_user: 2,
            ..settings()
        },
        |hub| hub,
    )
    .await;
    let _a = connect(&s, "alice").await;
    let _b = connect(&s, "alice").await;
    let mut req = format!("ws://127.0.0.1:{}/ws", s.port)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", "Bearer token-alice".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 429);
            let body: Value = serde_json::from_slice(r.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["code"], "too_many_connections");
        }
        other => panic!("a third socket was not refused: {other:?}"),
    }
    let mut bob = connect(&s, "bob").await;
    send(&mut bob, json!({"type": "echo", "id": "b"})).await;
    assert_eq!(
        recv(&mut bob).await["id"],
        "b",
        "other users are not limited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_every_socket_of_the_user_and_no_one_else() {
    let s = server().await;
    let mut phone = connect(&s, "alice").await;
    let mut tablet = connect(&s, "alice").await;
    let mut bob = connect(&s, "bob").await;
    eventually("three connections", Duration::from_secs(5), || async {
        (s.hub.connection_count() == 3).then_some(())
    })
    .await;
    let notifier = HubNotifier::new(s.hub.clone());
    let alice = domain::FirebaseUid::parse("alice").unwrap();
    notifier
        .notify(
            &Audience::User(alice),
            &Notification::new("profile.updated", json!({"display_name": "A"})),
        )
        .await
        .unwrap();
    for ws in [&mut phone, &mut tablet] {
        assert_eq!(
            recv(ws).await,
            json!({"type": "profile.updated", "data": {"display_name": "A"}})
        );
    }
    send(&mut bob, json!({"type": "echo", "id": "b"})).await;
    assert_eq!(
        recv(&mut bob).await["id"],
        "b",
        "bob's next message is his own echo, not alice's notification"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_joined_only_when_allowed() {
    let s = server().await;
    let mut ws = connect(&s, "alice").await;
    send(
        &mut ws,
        json!({"type": "subscribe", "id": "1", "data": {"topic": "user:bob"}}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["data"]["code"], "forbidden_topic");
    send(
        &mut ws,
        json!({"type": "subscribe", "id": "2", "data": {"topic": "user:alice"}}),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "subscribed", "id": "2", "data": {"topic": "user:alice"}})
    );
    send(&mut ws, json!({"type": "subscribe", "id": "3", "data": {}})).await;
    assert_eq!(recv(&mut ws).await["data"]["code"], "invalid_data");
    s.hub.deliver_local(
        &Audience::Topic("user:alice".into()),
        &Notification::new("topic.msg", json!(1)),
    );
    assert_eq!(recv(&mut ws).await["type"], "topic.msg");
    send(
        &mut ws,
        json!({"type": "unsubscribe", "id": "4", "data": {"topic": "user:alice"}}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "unsubscribed");
    assert_eq!(
        s.hub.deliver_local(
            &Audience::Topic("user:alice".into()),
            &Notification::new("topic.msg", json!(2))
        ),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_pings_is_closed_after_the_idle_timeout() {
    let s = server_with(
        HubSettings {
            ping_interval: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(400),
            ..settings()
        },
        |hub| hub,
    )
    .await;
    let ws = connect(&s, "alice").await;
    // Not reading means not answering pings.
    eventually(
        "the idle connection to be closed",
        Duration::from_secs(10),
        || async { (s.hub.connection_count() == 0).then_some(()) },
    )
    .await;
    let mut ws = ws;
    assert_eq!(close_code(&mut ws).await, 1008);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_socket_with_1001_and_refuses_new_ones() {
    let s = server().await;
    let mut a = connect(&s, "alice").await;
    let mut b = connect(&s, "bob").await;
    eventually("two connections", Duration::from_secs(5), || async {
        (s.hub.connection_count() == 2).then_some(())
    })
    .await;
    s.hub.shutdown();
    assert_eq!(close_code(&mut a).await, 1001);
    assert_eq!(close_code(&mut b).await, 1001);
    let mut req = format!("ws://127.0.0.1:{}/ws", s.port)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", "Bearer token-carol".parse().unwrap());
    assert!(
        matches!(tokio_tungstenite::connect_async(req).await, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 503)
    );
}

/// Makes `token` valid for `uid` until `expires_in` from now.
fn expiring(s: &Server, token: &str, uid: &str, expires_in: Duration) {
    let mut id = domain::VerifiedIdentity::new(domain::FirebaseUid::parse(uid).unwrap());
    id.expires_at = Some(chrono::Utc::now() + expires_in);
    s.verifier.allow(token, id);
}

async fn connect_with(s: &Server, token: &str) -> Ws {
    let req = format!("ws://127.0.0.1:{}/ws?access_token={token}", s.port)
        .into_client_request()
        .unwrap();
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_is_warned_then_closed_with_4001_when_its_token_expires() {
    let s = server().await;
    let lifetime = Duration::from_millis(1500);
    expiring(&s, "short", "alice", lifetime);
    let opened = std::time::Instant::now();
    let mut ws = connect_with(&s, "short").await;
    // Less than EXPIRY_NOTICE is left from the start: told at once.
    let notice = recv(&mut ws).await;
    assert_eq!(notice["type"], ws_hub::TOKEN_EXPIRING_TYPE);
    assert!(notice["data"]["expires_at"].is_string(), "{notice}");
    assert_eq!(close_code(&mut ws).await, 4001);
    let lived = opened.elapsed();
    assert!(
        lived >= lifetime - Duration::from_millis(100) && lived < lifetime + Duration::from_secs(2),
        "closed after {lived:?} for a token of {lifetime:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_token_for_the_same_user_keeps_the_socket_open() {
    let s = server().await;
    let lifetime = Duration::from_millis(1500);
    expiring(&s, "first", "alice", lifetime);
    expiring(&s, "fresh", "alice", Duration::from_secs(3600));
    expiring(&s, "bobs", "bob", Duration::from_secs(3600));
    let opened = std::time::Instant::now();
    let mut ws = connect_with(&s, "first").await;
    assert_eq!(recv(&mut ws).await["type"], ws_hub::TOKEN_EXPIRING_TYPE);

    send(
        &mut ws,
        json!({"type": "refresh", "id": "r1", "data": {"token": "bobs"}}),
    )
    .await;
    let refused = recv(&mut ws).await;
    assert_eq!(
        (refused["type"].as_str(), refused["id"].as_str()),
        (Some("error"), Some("r1"))
    );
    assert_eq!(refused["data"]["code"], "token_mismatch");
    send(
        &mut ws,
        json!({"type": "refresh", "id": "r2", "data": {"token": "forged"}}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["data"]["code"], "invalid_token");
    send(&mut ws, json!({"type": "refresh", "id": "r3", "data": {}})).await;
    assert_eq!(recv(&mut ws).await["data"]["code"], "invalid_data");

    send(
        &mut ws,
        json!({"type": "refresh", "id": "r4", "data": {"token": "fresh"}}),
    )
    .await;
    let refreshed = recv(&mut ws).await;
    assert_eq!(refreshed["type"], "refreshed");
    assert_eq!(refreshed["id"], "r4");
    assert!(refreshed["data"]["expires_at"].is_string());
    // Past the first token's expiry (and a second's slack): still open.
    tokio::time::sleep((lifetime + Duration::from_secs(1)).saturating_sub(opened.elapsed())).await;
    send(
        &mut ws,
        json!({"type": "echo", "id": "e", "data": {"still": "here"}}),
    )
    .await;
    let echo = recv(&mut ws).await;
    assert_eq!(echo["data"]["still"], "here", "{echo}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_closes_every_socket_of_the_user_with_its_code_after_a_notice() {
    let s = server().await;
    let mut a1 = connect(&s, "alice").await;
    let mut a2 = connect(&s, "alice").await;
    let mut b = connect(&s, "bob").await;
    let uid = domain::FirebaseUid::parse("alice").unwrap();
    HubNotifier::new(s.hub.clone())
        .disconnect(&Audience::User(uid), &ports::Disconnect::account_deleted())
        .await
        .unwrap();
    for ws in [&mut a1, &mut a2] {
        let notice = recv(ws).await;
        assert_eq!(notice["type"], ws_hub::DISCONNECT_TYPE);
        assert_eq!(notice["data"]["code"], 4003);
        assert_eq!(close_code(ws).await, 4003);
    }
    send(&mut b, json!({"type": "echo", "data": 1})).await;
    assert_eq!(
        recv(&mut b).await["data"],
        1,
        "other users keep their sockets"
    );
    eventually("the hub to forget them", Duration::from_secs(5), || async {
        (s.hub.connection_count() == 1).then_some(())
    })
    .await;
}

mod closing_handshake {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as Code;

    #[tokio::test]
    async fn a_clients_close_is_answered_with_its_own_code_and_the_tcp_connection_ends() {
        let s = server().await;
        for code in [1000_u16, 1001, 3000, 4500] {
            let mut ws = connect(&s, "alice").await;
            ws.send(Message::Close(Some(CloseFrame {
                code: Code::from(code),
                reason: "bye".into(),
            })))
            .await
            .unwrap();
            assert_eq!(close_code(&mut ws).await, code, "echoed");
            // After the handshake the server closes the TCP connection (the
            // client waits for it, RFC 6455 §7.1.1). actix-http first
            // lingers up to its client disconnect timeout (1 s) for request
            // data left unread, then closes: within 3 s is within margin.
            let end = tokio::time::timeout(Duration::from_secs(3), async {
                loop {
                    match ws.next().await {
                        None | Some(Err(_)) => return,
                        Some(Ok(_)) => continue,
                    }
                }
            })
            .await;
            assert!(end.is_ok(), "the server left the TCP connection open");
        }
    }

    #[tokio::test]
    async fn a_frame_with_reserved_bits_set_is_a_protocol_error() {
        let s = server().await;
        let mut ws = connect(&s, "alice").await;
        let mut frame = Frame::message(r#"{"type":"echo"}"#, OpCode::Data(Data::Text), true);
        frame.header_mut().rsv1 = true;
        ws.send(Message::Frame(frame)).await.unwrap();
        assert_eq!(close_code(&mut ws).await, 1002);
    }
}

/// A loopback socket with kernel buffers of `bytes` each way (the kernel
/// doubles what it is asked for and no longer grows it by itself).
fn small_buffers(bytes: u32) -> tokio::net::TcpSocket {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(bytes).unwrap();
    socket.set_send_buffer_size(bytes).unwrap();
    socket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_sends_and_never_reads_stops_being_read_then_is_closed() {
    const KERNEL: u32 = 64 * 1024;
    let listener = small_buffers(KERNEL);
    listener.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = listener.listen(64).unwrap().into_std().unwrap();
    let settings = HubSettings {
        ping_interval: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(5),
        ..settings()
    };
    let s = server_on(listener, settings.clone(), |hub| hub);
    let url = format!("ws://127.0.0.1:{}/ws?access_token=token-alice", s.port);
    let stream = small_buffers(KERNEL)
        .connect(format!("127.0.0.1:{}", s.port).parse().unwrap())
        .await
        .unwrap();
    let (mut flooder, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();

    // Echoes of 60 KiB, never reading a reply. What the server may take in
    // before it stops reading: the kernel buffers of both sockets both ways
    // (doubled by the kernel), the hub queue's byte budget, a reply per
    // connection slot, what actix-ws holds (its 32-frame channel, and as
    // many drained into its body), and slack for the frames being read
    // and written. A server that keeps reading takes everything sent.
    let message = json!({"type": "echo", "data": "z".repeat(60 * 1024)}).to_string();
    let frame = message.len();
    let bound = 8 * KERNEL as usize
        + settings.outbound_bytes
        + (settings.per_connection_concurrency + 2 * 32 + 8) * frame;
    let cap = 8 * bound;
    let mut written = 0;
    let mut bystander_served = false;
    let ended = loop {
        if written >= cap {
            break None;
        }
        // A write waits at most until the server closes a client that
        // drained nothing for its idle timeout (plus the close's second).
        match tokio::time::timeout(
            settings.idle_timeout * 3,
            flooder.send(Message::text(message.clone())),
        )
        .await
        {
            Ok(Ok(())) => written += frame,
            Ok(Err(e)) => break Some(e),
            Err(_) => panic!("the server neither read nor closed the flooder"),
        }
        // Meanwhile everyone else is served.
        if written == 16 * frame {
            let mut bystander = connect(&s, "bob").await;
            send(&mut bystander, json!({"type": "echo", "id": "b"})).await;
            assert_eq!(recv(&mut bystander).await["id"], "b");
            bystander_served = true;
        }
    };
    assert!(
        ended.is_some(),
        "the server read {cap} bytes from a client that never read"
    );
    assert!(
        written <= bound,
        "the server read {written} bytes before it stopped reading (bound {bound})"
    );
    assert!(bystander_served);
    eventually("the flooder to be gone", settings.idle_timeout, || async {
        (s.hub.connection_count() == 0).then_some(())
    })
    .await;
}

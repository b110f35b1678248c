//! Realtime end to end: real WebSocket clients against the whole app, one
//! instance or two sharing Redis.

use app::Role;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use std::time::Duration;
use test_support::{spawn_app, spawn_sibling};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_change_reaches_the_users_open_socket() {
    let app = spawn_app().await;
    let token = app.token_with("alice", Some("alice@example.com"), Some("Alice"));
    assert_eq!(app.patch_me(&token, &json!({})).await.0, 201);
    let mut socket = connect(&app, &token).await;
    ready(&mut socket).await;
    assert_eq!(
        app.patch_me(&token, &json!({"display_name": "Alice B."}))
            .await
            .0,
        200
    );
    let msg = recv(&mut socket).await;
    assert_eq!(msg["type"], "profile.updated");
    assert_eq!(msg["data"]["display_name"], "Alice B.");
    assert_eq!(msg["data"]["uid"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_reaches_the_socket_on_the_other_instance() {
    let a = spawn_app().await;
    let b = spawn_sibling(&a, Role::Serve, &[]).await;
    assert_ne!(a.port, b.port);
    let token = a.token_with("bob", Some("bob@example.com"), Some("Bob"));
    assert_eq!(a.patch_me(&token, &json!({})).await.0, 201);
    let mut on_b = connect(&b, &token).await;
    ready(&mut on_b).await;
    // The change goes through instance A; the socket is held by instance B.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    let msg = loop {
        n += 1;
        assert_eq!(
            a.patch_me(&token, &json!({"display_name": format!("Bob {n}")}))
                .await
                .0,
            200
        );
        match tokio::time::timeout(Duration::from_millis(500), on_b.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => break serde_json::from_str::<Value>(&t).unwrap(),
            _ => assert!(
                std::time::Instant::now() < deadline,
                "instance B never got the notification"
            ),
        }
    };
    assert_eq!(msg["type"], "profile.updated");
    assert!(
        msg["data"]["display_name"]
            .as_str()
            .unwrap()
            .starts_with("Bob ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_account_closes_its_sockets_on_every_instance() {
    let a = spawn_app().await;
    let b = spawn_sibling(&a, Role::Serve, &[]).await;
    let token = a.token_with("dana", Some("dana@example.com"), None);
    assert_eq!(a.patch_me(&token, &json!({})).await.0, 201);
    let mut on_a = connect(&a, &token).await;
    let mut on_b = connect(&b, &token).await;
    ready(&mut on_a).await;
    ready(&mut on_b).await;
    // First make sure B hears A through the fan-out (its subscription is
    // live): a profile change from A reaches B's socket.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    loop {
        n += 1;
        let body = json!({"display_name": format!("Dana {n}")});
        assert_eq!(a.patch_me(&token, &body).await.0, 200);
        if let Ok(Some(Ok(Message::Text(_)))) =
            tokio::time::timeout(Duration::from_millis(500), on_b.next()).await
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "B never heard A");
    }
    let res = a
        .client
        .delete(a.url("/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    for (name, ws) in [("A", &mut on_a), ("B", &mut on_b)] {
        let code = loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .unwrap_or_else(|_| panic!("instance {name}: no close in time"))
            {
                Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
                Some(Ok(_)) => continue,
                other => panic!("instance {name}: no close frame: {other:?}"),
            }
        };
        assert_eq!(code, 4003, "instance {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_app_closes_sockets_with_1001() {
    let app = spawn_app().await;
    let token = app.token("carol");
    let mut socket = connect(&app, &token).await;
    ready(&mut socket).await;
    app.stop().await.unwrap();
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a close in time")
        {
            Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(code, 1001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upgrade_without_a_token_is_a_401_problem() {
    let app = spawn_app().await;
    let req = format!("ws://127.0.0.1:{}/ws", app.port)
        .into_client_request()
        .unwrap();
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 401);
            assert_eq!(res.headers()["content-type"], "application/problem+json");
        }
        other => panic!("expected 401, got {other:?}"),
    }
}

/// The ops console's users page: `uid`'s "sockets open now" cell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_sees_a_users_open_sockets_across_instances() {
    let app = spawn_app().await;
    let other = spawn_sibling(&app, Role::Serve, &[]).await;
    let token = app.token_with("sam", Some("sam@example.com"), None);
    assert_eq!(app.patch_me(&token, &json!({})).await.0, 201);
    // Before any socket (the heartbeats name both instances alive).
    assert_eq!(open_sockets(&app, "sam").await, "0");
    let mut a = connect(&app, &token).await;
    let mut b = connect(&other, &token).await;
    ready(&mut a).await;
    ready(&mut b).await;
    // One per instance.
    wait_for_sockets(&app, "sam", 2).await;
    a.close(None).await.unwrap();
    drop(a);
    wait_for_sockets(&other, "sam", 1).await;
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_that_comes_back_on_another_instance_recovers_what_it_missed() {
    let a = spawn_app().await;
    let b = spawn_sibling(&a, Role::Serve, &[]).await;
    let token = a.token_with("erin", Some("erin@example.com"), None);
    assert_eq!(a.patch_me(&token, &json!({})).await.0, 201);
    let mut phone = connect(&a, &token).await;
    let before = subscribe(&mut phone, "user:erin", None).await;
    let epoch = before["epoch"].clone();
    let seen = before["offset"].as_u64().unwrap();
    // The phone goes into a tunnel.
    phone.close(None).await.unwrap();
    drop(phone);
    for n in 1..=3 {
        let body = json!({"display_name": format!("Erin {n}")});
        assert_eq!(a.patch_me(&token, &body).await.0, 200);
    }
    // It comes back through the other instance.
    let mut phone = connect(&b, &token).await;
    let back = subscribe(
        &mut phone,
        "user:erin",
        Some(&json!({"offset": seen, "epoch": epoch})),
    )
    .await;
    assert_eq!(back["recovered"], true, "{back}");
    assert_eq!(back["epoch"], epoch);
    // Each change, in order, once: recovered, or live if its publication
    // was still on its way.
    for n in 1..=3u64 {
        let m = recv(&mut phone).await;
        assert_eq!(m["type"], "profile.updated", "{m}");
        assert_eq!(m["topic"], "user:erin");
        assert_eq!(m["offset"].as_u64(), Some(seen + n));
        assert_eq!(m["data"]["display_name"], format!("Erin {n}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_on_a_public_topic_spans_instances() {
    let a = spawn_app().await;
    let b = spawn_sibling(&a, Role::Serve, &[]).await;
    let (fay, gus) = (a.token("fay"), a.token("gus"));
    let mut on_a = connect(&a, &fay).await;
    let mut on_b = connect(&b, &gus).await;
    subscribe(&mut on_a, "public:lobby", None).await;
    subscribe(&mut on_b, "public:lobby", None).await;
    send(
        &mut on_a,
        json!({"type": "presence", "id": "p", "data": {"topic": "public:lobby"}}),
    )
    .await;
    let reply = recv(&mut on_a).await;
    assert_eq!(reply["type"], "presence", "{reply}");
    let mut uids: Vec<String> = reply["data"]["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["uid"].as_str().unwrap().to_owned())
        .collect();
    uids.sort();
    assert_eq!(uids, ["fay", "gus"]);
    // Gus leaves: he is gone from the list (no waiting for an expiry).
    send(
        &mut on_b,
        json!({"type": "unsubscribe", "id": "u", "data": {"topic": "public:lobby"}}),
    )
    .await;
    assert_eq!(recv(&mut on_b).await["type"], "unsubscribed");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        send(
            &mut on_a,
            json!({"type": "presence", "id": "p", "data": {"topic": "public:lobby"}}),
        )
        .await;
        let clients = recv(&mut on_a).await["data"]["clients"].clone();
        if clients.as_array().unwrap().len() == 1 {
            assert_eq!(clients[0]["uid"], "fay");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "gus never left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_older_than_its_minimum_is_refused_before_the_upgrade() {
    let app = test_support::spawn_app_with(
        Role::All,
        &[
            ("MIN_APP_VERSION_ANDROID", "3.0.0"),
            (
                "APP_STORE_URL_ANDROID",
                "https://play.google.com/store/apps/details?id=app",
            ),
        ],
    )
    .await;
    let token = app.token("old-phone");
    let request = |version: &str| {
        let mut req = format!("ws://127.0.0.1:{}/ws", app.port)
            .into_client_request()
            .unwrap();
        let h = req.headers_mut();
        h.insert("authorization", format!("Bearer {token}").parse().unwrap());
        h.insert("x-app-platform", "android".parse().unwrap());
        h.insert("x-app-version", version.parse().unwrap());
        req
    };
    match tokio_tungstenite::connect_async(request("2.9.9")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 426);
            assert_eq!(res.headers()["content-type"], "application/problem+json");
            let body: Value = serde_json::from_slice(res.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["code"], "upgrade_required");
            assert_eq!(body["min_version"], "3.0.0");
        }
        other => panic!("expected 426, got {other:?}"),
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(request("3.0.0"))
        .await
        .unwrap();
    ready(&mut ws).await;
}

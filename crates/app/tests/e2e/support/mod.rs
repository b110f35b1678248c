//! A real WebSocket client against a spawned app, shared by the test files
//! that need one.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use std::time::Duration;
use test_support::TestApp;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn connect(app: &TestApp, token: &str) -> Ws {
    let mut req = format!("ws://127.0.0.1:{}/ws", app.port)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

pub(crate) async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

pub(crate) async fn recv(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message in time")
            .unwrap()
            .unwrap()
        {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                conforms(&v);
                return v;
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Proves the socket is registered (a round trip through the hub).
pub(crate) async fn ready(ws: &mut Ws) {
    send(ws, json!({"type": "echo", "id": "ready"})).await;
    assert_eq!(recv(ws).await["id"], "ready");
}

/// Subscribes to `topic` (from `since`, if given) and returns the
/// `subscribed` reply's data, skipping what comes before it.
pub(crate) async fn subscribe(ws: &mut Ws, topic: &str, since: Option<&Value>) -> Value {
    let mut data = json!({"topic": topic});
    if let Some(since) = since {
        data["since"] = since.clone();
    }
    send(ws, json!({"type": "subscribe", "id": "sub", "data": data})).await;
    loop {
        let m = recv(ws).await;
        if m["id"] == "sub" {
            assert_eq!(m["type"], "subscribed", "{m}");
            return m["data"].clone();
        }
    }
}

/// The ops console's count of `uid`'s open sockets, across instances.
pub(crate) async fn open_sockets(app: &TestApp, uid: &str) -> String {
    let page = app
        .client
        .get(app.url(&format!("/ops/users?q={uid}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = format!("data-sockets=\"{uid}\">");
    let at = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no sockets cell: {page}"))
        + marker.len();
    page[at..].split('<').next().unwrap_or_default().to_owned()
}

/// Waits until `uid` has `n` open sockets counted (counted off the
/// connection's path: one Redis round trip), within 5 s.
pub(crate) async fn wait_for_sockets(app: &TestApp, uid: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while open_sockets(app, uid).await != n.to_string() {
        assert!(
            std::time::Instant::now() < deadline,
            "{uid} never had {n} sockets counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that an envelope of a documented type matches its schema in the
/// AsyncAPI document (`app::asyncapi()`, checked in as
/// `openapi/asyncapi.json`).
pub(crate) fn conforms(envelope: &Value) {
    static SCHEMAS: std::sync::OnceLock<std::collections::HashMap<String, jsonschema::Validator>> =
        std::sync::OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| {
        let doc = app::asyncapi();
        doc["components"]["messages"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(key, _)| key.starts_with("server."))
            .map(|(_, m)| {
                let name = m["name"].as_str().unwrap().to_owned();
                (name, jsonschema::validator_for(&m["payload"]).unwrap())
            })
            .collect()
    });
    let kind = envelope["type"].as_str().unwrap_or_default();
    if let Some(validator) = schemas.get(kind) {
        let errors: Vec<String> = validator
            .iter_errors(envelope)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{envelope} is not the documented {kind}: {errors:?}"
        );
    }
}

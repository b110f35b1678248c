//! What the hub's test files share: a hub behind a real actix server, and
//! a real WebSocket client's helpers.

use futures_util::{SinkExt as _, StreamExt as _};
use ports_testing::FakeTokenVerifier;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use ws_hub::{Hub, HubBuilder, HubSettings};

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) struct Server {
    pub(crate) port: u16,
    pub(crate) hub: Hub,
    pub(crate) verifier: Arc<FakeTokenVerifier>,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for Server {
    fn drop(&mut self) {
        let h = self.handle.clone();
        tokio::spawn(async move { h.stop(false).await });
    }
}

pub(crate) fn settings() -> HubSettings {
    HubSettings {
        ping_interval: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(15),
        ..HubSettings::new("test")
    }
}

pub(crate) async fn server_with(
    settings: HubSettings,
    setup: impl FnOnce(HubBuilder) -> HubBuilder,
) -> Server {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    server_on(listener, settings, setup)
}

/// A server on `listener` (one whose sockets have small kernel buffers,
/// say).
pub(crate) fn server_on(
    listener: std::net::TcpListener,
    settings: HubSettings,
    setup: impl FnOnce(HubBuilder) -> HubBuilder,
) -> Server {
    let verifier = Arc::new(FakeTokenVerifier::new());
    for uid in ["alice", "bob", "carol"] {
        verifier.allow_uid(&format!("token-{uid}"), uid);
    }
    let hub = setup(Hub::builder(settings)).build();
    let port = listener.local_addr().unwrap().port();
    let (h, v) = (hub.clone(), verifier.clone());
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new().configure(ws_hub::configure(
            h.clone(),
            v.clone() as Arc<dyn ports::TokenVerifier>,
        ))
    })
    .workers(2)
    .on_connect(ws_hub::on_connect)
    .listen(listener)
    .unwrap()
    .disable_signals()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    Server {
        port,
        hub,
        verifier,
        handle,
    }
}

pub(crate) async fn server() -> Server {
    server_with(settings(), |hub| hub).await
}

pub(crate) async fn connect(s: &Server, uid: &str) -> Ws {
    let mut req = format!("ws://127.0.0.1:{}/ws", s.port)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer token-{uid}").parse().unwrap(),
    );
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

pub(crate) async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// The next text envelope (skipping pings), within 5 s.
pub(crate) async fn recv(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message in time")
            .unwrap()
            .unwrap();
        match msg {
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

/// Reads until the server's close frame; returns its code.
pub(crate) async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a close in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(Message::Close(None))) => return 1005,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("connection ended without a close frame: {e}"),
            None => panic!("connection ended without a close frame"),
        }
    }
}

/// Asserts that an envelope of a type the hub documents (its catalogue,
/// the AsyncAPI document's source) matches its schema: every test that
/// reads one checks the document against the behaviour.
pub(crate) fn conforms(envelope: &Value) {
    static SCHEMAS: std::sync::OnceLock<
        std::collections::HashMap<&'static str, jsonschema::Validator>,
    > = std::sync::OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| {
        ws_hub::catalogue::builtin_messages()
            .into_iter()
            .filter(|m| m.direction == ports::Direction::ToClient)
            .map(|m| {
                let schema = ws_hub::catalogue::envelope_schema(&m);
                (m.kind, jsonschema::validator_for(&schema).unwrap())
            })
            .collect()
    });
    let Some(kind) = envelope["type"].as_str() else {
        panic!("an envelope without a type: {envelope}");
    };
    if let Some(validator) = schemas.get(kind) {
        let errors: Vec<String> = validator
            .iter_errors(envelope)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{envelope} does not match the documented {kind}: {errors:?}"
        );
    }
}

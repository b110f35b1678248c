//! Scenario 8: bad input on the WebSocket.

use crate::Outcome;
use crate::bad_input::start;
use futures_util::{SinkExt as _, StreamExt as _};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// Scenario 8: Invalid UTF-8, fragmented oversize messages, a thousand unknown types:
/// the right close codes or error envelopes, and others unaffected.
pub(crate) async fn websocket(_quick: bool) -> anyhow::Result<Outcome> {
    let (keys, _db, _redis, app) = start().await?;
    let url = format!("ws://127.0.0.1:{}/ws", app.port);
    let connect = || async {
        let mut req = url.clone().into_client_request()?;
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", keys.token("ws-bad", None, None)?).parse()?,
        );
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(req),
        )
        .await??;
        anyhow::Ok(ws)
    };
    let close_code = |mut ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >| async move {
        tokio::time::timeout(Duration::from_secs(10), async move {
            while let Some(m) = ws.next().await {
                if let Ok(Message::Close(f)) = m {
                    return f.map(|f| u16::from(f.code));
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    };
    let mut o = Outcome::default();
    let mut bystander = connect().await?;

    let mut ws = connect().await?;
    ws.send(Message::Frame(Frame::message(
        vec![0xc3, 0x28, 0xa0, 0xa1],
        OpCode::Data(Data::Text),
        true,
    )))
    .await?;
    expect_close(&mut o, close_code(ws).await, 1007, "invalid UTF-8");

    let mut ws = connect().await?;
    let chunk = vec![b'a'; 40 * 1024];
    ws.send(Message::Frame(Frame::message(
        chunk.clone(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await?;
    ws.send(Message::Frame(Frame::message(
        chunk,
        OpCode::Data(Data::Continue),
        true,
    )))
    .await?;
    expect_close(&mut o, close_code(ws).await, 1009, "fragmented oversize");

    let mut ws = connect().await?;
    for i in 0..1000 {
        ws.send(Message::text(
            serde_json::json!({"type": format!("nope.{i}"), "id": i.to_string()}).to_string(),
        ))
        .await?;
    }
    let mut errors = 0;
    let answered_by = tokio::time::Instant::now() + Duration::from_secs(20);
    while errors < 1000 {
        match tokio::time::timeout_at(answered_by, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: serde_json::Value = serde_json::from_str(&t)?;
                if v["type"] == "error" && v["data"]["code"] == "unknown_type" {
                    errors += 1;
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    o.sent += 1000;
    o.processed += errors;
    if errors != 1000 {
        o.errors += 1;
        o.notes
            .push(format!("{errors} of 1000 unknown types answered"));
    }
    bystander
        .send(Message::text(r#"{"type":"echo","id":"alive"}"#))
        .await?;
    let alive = tokio::time::timeout(Duration::from_secs(5), bystander.next()).await;
    o.sent += 1;
    match alive {
        Ok(Some(Ok(Message::Text(t)))) if t.contains("alive") => o.processed += 1,
        other => {
            o.errors += 1;
            o.notes
                .push(format!("the bystander was not served: {other:?}"));
        }
    }
    Ok(o)
}

/// Counts one case: the connection closed with `want`.
fn expect_close(o: &mut Outcome, code: Option<u16>, want: u16, what: &str) {
    o.sent += 1;
    if code == Some(want) {
        o.processed += 1;
    } else {
        o.errors += 1;
        o.notes.push(format!("{what} closed with {code:?}"));
    }
}

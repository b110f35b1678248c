//! Scenarios 7 and 8: bad input on every route and on the WebSocket.

use crate::Outcome;
use crate::auth::{Keys, PROJECT};
use crate::tools;
use futures_util::{SinkExt as _, StreamExt as _};
use std::time::Duration;
use test_support::{TestDb, TestRedis};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

async fn start() -> anyhow::Result<(Keys, TestDb, TestRedis, tools::Proc)> {
    let keys = Keys::start().await?;
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    let env = vec![
        ("APP_ENV", "production".to_owned()),
        ("DATABASE_URL", db.url().to_owned()),
        ("REDIS_URL", redis.url().to_owned()),
        ("REDIS_KEY_PREFIX", redis.prefix().to_owned()),
        ("FIREBASE_PROJECT_ID", PROJECT.to_owned()),
        ("FIREBASE_KEYS_URL", keys.url.clone()),
        ("CURSOR_SECRET", "chaos-cursor-secret-0123456789".to_owned()),
        ("MIGRATE_ON_START", "false".to_owned()),
        ("RATE_LIMIT_PER_USER", "0".to_owned()),
        ("RATE_LIMIT_PER_IP", "0".to_owned()),
    ];
    let (app, _) = tools::start_app("serve", &env).await?;
    Ok((keys, db, redis, app))
}

fn deep(n: usize) -> Vec<u8> {
    let mut v = "[".repeat(n).into_bytes();
    v.extend("]".repeat(n).into_bytes());
    v
}

/// Scenario 7: Malformed JSON, wrong types, huge bodies, deep nesting, invalid UTF-8,
/// unknown fields, empty bodies, wrong content types, absurd pagination:
/// always a 4xx problem+json, never a 5xx, never a hang.
pub(crate) async fn http(_quick: bool) -> anyhow::Result<Outcome> {
    let (keys, _db, _redis, app) = start().await?;
    let base = format!("http://127.0.0.1:{}", app.port);
    let token = keys.token("bad-input", Some("bad@chaos.example"), None)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    // The profile exists, so nothing below is a legitimate 404.
    client
        .patch(format!("{base}/api/v1/me"))
        .bearer_auth(&token)
        .json(&serde_json::json!({}))
        .send()
        .await?;

    let bodies: Vec<(&str, Vec<u8>, &str)> = vec![
        ("malformed JSON", b"{\"display_name\": ".to_vec(), "application/json"),
        ("wrong types", br#"{"display_name": 12, "token": [], "platform": {}}"#.to_vec(), "application/json"),
        ("array instead of object", b"[1,2,3]".to_vec(), "application/json"),
        ("huge body", [b"{\"display_name\":\"".to_vec(), vec![b'a'; 2 * 1024 * 1024], b"\"}".to_vec()].concat(), "application/json"),
        ("deep nesting", deep(100_000), "application/json"),
        ("invalid UTF-8", b"{\"display_name\": \"\xff\xfe\xfd\"}".to_vec(), "application/json"),
        ("unknown fields", br#"{"is_admin": true}"#.to_vec(), "application/json"),
        ("empty body", Vec::new(), "application/json"),
        ("wrong content type", br#"{"display_name":"x"}"#.to_vec(), "text/plain"),
        ("form content type", b"display_name=x".to_vec(), "application/x-www-form-urlencoded"),
        ("no content type", br#"{"display_name":"x"}"#.to_vec(), ""),
        ("null", b"null".to_vec(), "application/json"),
        ("bad values", br#"{"display_name": "   ", "email": "x", "photo_url": "javascript:alert(1)", "token": "", "platform": "nokia"}"#.to_vec(), "application/json"),
    ];
    let mut o = Outcome::default();
    fn check(o: &mut Outcome, what: String, status: u16, ctype: Option<String>) {
        o.sent += 1;
        let problem = ctype
            .as_deref()
            .is_some_and(|c| c.starts_with("application/problem+json"));
        if (400..500).contains(&status) && problem {
            o.processed += 1;
        } else {
            o.errors += 1;
            o.notes.push(format!("{what}: {status} {ctype:?}"));
        }
    }
    for (method, path) in [("PATCH", "/api/v1/me"), ("POST", "/api/v1/push-tokens")] {
        for (name, body, ctype) in &bodies {
            let mut req = client
                .request(method.parse()?, format!("{base}{path}"))
                .bearer_auth(&token)
                .body(body.clone());
            if !ctype.is_empty() {
                req = req.header("content-type", *ctype);
            }
            let r = req.send().await?;
            let ct = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            check(
                &mut o,
                format!("{method} {path} with {name}"),
                r.status().as_u16(),
                ct,
            );
        }
    }
    let long_cursor = "A".repeat(600);
    let queries = [
        "limit=-1",
        "limit=0",
        "limit=1e30",
        "limit=abc",
        "limit=99999999999999999999",
        "cursor=garbage",
        "cursor=",
        "cursor=a.b",
        "cursor=%00%ff",
        &format!("cursor={long_cursor}"),
        "limit=10&limit=20",
        "cursor=eyJ9.AAAAAAAAAAAAAAAAAAAAAA",
    ];
    for q in queries {
        let r = client
            .get(format!("{base}/api/v1/push-tokens?{q}"))
            .bearer_auth(&token)
            .send()
            .await?;
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Clamped values are fine (200); anything else must be a 4xx problem.
        if status == 200 {
            o.sent += 1;
            o.processed += 1;
        } else {
            check(
                &mut o,
                format!(
                    "GET /api/v1/push-tokens?{}",
                    q.chars().take(40).collect::<String>()
                ),
                status,
                ct,
            );
        }
    }
    for (method, path) in [
        ("DELETE", "/api/v1/push-tokens/%FF%FE"),
        ("DELETE", "/api/v1/push-tokens/has%20space"),
        ("GET", "/api/v1/nope"),
        ("PUT", "/api/v1/me"),
        ("GET", "/api/v1/me/../../etc/passwd"),
    ] {
        let r = client
            .request(method.parse()?, format!("{base}{path}"))
            .bearer_auth(&token)
            .send()
            .await?;
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        check(&mut o, format!("{method} {path}"), r.status().as_u16(), ct);
    }
    for bad_auth in [
        "Bearer",
        "Bearer a.b.c",
        "Basic Zm9vOmJhcg==",
        &format!("Bearer {}", "x".repeat(9000)),
        "Bearer \u{7f}",
    ] {
        let r = client
            .get(format!("{base}/api/v1/me"))
            .header("authorization", bad_auth)
            .send()
            .await;
        match r {
            Ok(r) => {
                let ct = r
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                check(
                    &mut o,
                    format!(
                        "GET /api/v1/me with authorization {:?}",
                        bad_auth.chars().take(20).collect::<String>()
                    ),
                    r.status().as_u16(),
                    ct,
                );
            }
            Err(_) => {
                // The client refused to send an invalid header value: nothing reached the server.
            }
        }
    }
    Ok(o)
}

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
        anyhow::Ok(tokio_tungstenite::connect_async(req).await?.0)
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
    let code = close_code(ws).await;
    o.sent += 1;
    if code == Some(1007) {
        o.processed += 1
    } else {
        o.errors += 1;
        o.notes.push(format!("invalid UTF-8 closed with {code:?}"))
    }

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
    let code = close_code(ws).await;
    o.sent += 1;
    if code == Some(1009) {
        o.processed += 1
    } else {
        o.errors += 1;
        o.notes
            .push(format!("fragmented oversize closed with {code:?}"))
    }

    let mut ws = connect().await?;
    for i in 0..1000 {
        ws.send(Message::text(
            serde_json::json!({"type": format!("nope.{i}"), "id": i.to_string()}).to_string(),
        ))
        .await?;
    }
    let mut errors = 0;
    while errors < 1000 {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
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

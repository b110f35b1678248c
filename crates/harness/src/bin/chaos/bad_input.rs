//! Scenario 7: bad input on every HTTP route (scenario 8, the WebSocket
//! frames, is in `bad_websocket`). Over 400 lines on purpose: it is one
//! table of cases per route, read top to bottom.

use crate::Outcome;
use crate::auth::{Keys, PROJECT};
use crate::probe::{Answer, Checks, Expect, raw, upgrade_head};
use crate::tools;
use std::time::Duration;
use test_support::{TestDb, TestRedis};

pub(crate) async fn start() -> anyhow::Result<(Keys, TestDb, TestRedis, tools::Proc)> {
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
        ("SSL_CERT_FILE", keys.ca_file()),
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

/// Scenario 7: Every route with malformed JSON, wrong types, huge bodies (with
/// and without a Content-Length), deep nesting, invalid UTF-8, unknown
/// fields, empty bodies, wrong content types, bad tokens, absurd pagination
/// and cursors, and broken WebSocket upgrades: always a 4xx problem+json
/// (or, where the input is ignored or clamped, a 2xx), never a 5xx, never a
/// hang.
pub(crate) async fn http(_quick: bool) -> anyhow::Result<Outcome> {
    let (keys, _db, _redis, app) = start().await?;
    let port = app.port;
    let base = format!("http://127.0.0.1:{port}");
    let token = keys.token("bad-input", Some("bad@chaos.example"), None)?;
    let client = tools::client(Duration::from_secs(10))?;
    let mut c = Checks {
        o: Outcome::default(),
        parser_refusals: 0,
    };
    // The profile exists, so nothing below is a legitimate 404; three
    // devices, so the list has pages and a real cursor to tamper with.
    anyhow::ensure!(crate::faults::patch_me(&client, port, &token).await? == 201);
    for i in 0..3 {
        client
            .post(format!("{base}/api/v1/push-tokens"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"token": format!("device-token-{i}"), "platform": "android"}))
            .send()
            .await?
            .error_for_status()?;
    }

    // Bodies, on every route that takes one, and on POST /me/test-push,
    // which takes none (so it may ignore them).
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
    for (method, path, expect) in [
        ("PATCH", "/api/v1/me", Expect::Problem),
        ("POST", "/api/v1/push-tokens", Expect::Problem),
        ("POST", "/api/v1/me/test-push", Expect::ProblemOrOk),
    ] {
        for (name, body, ctype) in &bodies {
            let mut req = client
                .request(method.parse()?, format!("{base}{path}"))
                .bearer_auth(&token)
                .body(body.clone());
            if !ctype.is_empty() {
                req = req.header("content-type", *ctype);
            }
            let a = req.send().await.map(|r| Answer::of(&r)).map_err(Into::into);
            c.check(&format!("{method} {path} with {name}"), a, expect);
        }
        // Oversize and chunked: no Content-Length to refuse it by.
        let huge = [
            b"{\"display_name\":\"".to_vec(),
            vec![b'a'; 4 * 1024 * 1024],
            b"\"}".to_vec(),
        ]
        .concat();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close"
        );
        let a = raw(port, &head, &huge, true).await;
        c.check(
            &format!("{method} {path} with a 4 MiB chunked body"),
            a,
            expect,
        );
    }

    // Pagination: clamped limits may answer 200; a cursor this service
    // did not issue never may.
    let first: serde_json::Value = client
        .get(format!("{base}/api/v1/push-tokens?limit=1"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let cursor = first["next_cursor"].as_str().unwrap_or_default().to_owned();
    anyhow::ensure!(
        !cursor.is_empty(),
        "a page of 1 of 3 tokens has no next_cursor"
    );
    let tampered = {
        let mut b = cursor.clone().into_bytes();
        if let Some(last) = b.last_mut() {
            *last = if *last == b'A' { b'B' } else { b'A' };
        }
        String::from_utf8(b).unwrap_or_default()
    };
    let (body_part, tag_part) = cursor.split_once('.').unwrap_or_default();
    let long_cursor = "A".repeat(600);
    // `limit` is an integer clamped to 1..=100 (README): an integer out of
    // range is clamped, anything else is a 400; an empty cursor is the
    // first page.
    let limits = [
        ("limit=-1", Expect::Ok),
        ("limit=0", Expect::Ok),
        ("limit=1e30", Expect::Problem),
        ("limit=abc", Expect::Problem),
        ("limit=99999999999999999999", Expect::Problem),
        ("limit=-99999999999999999999", Expect::Problem),
        ("limit=10&limit=20", Expect::Problem),
        ("limit=%00", Expect::Problem),
        ("limit=1.5", Expect::Problem),
        ("cursor=", Expect::Ok),
    ];
    for (q, expect) in limits {
        let a = client
            .get(format!("{base}/api/v1/push-tokens?{q}"))
            .bearer_auth(&token)
            .send()
            .await
            .map(|r| Answer::of(&r))
            .map_err(Into::into);
        c.check(&format!("GET /api/v1/push-tokens?{q}"), a, expect);
    }
    let cursors = [
        "garbage".to_owned(),
        "a.b".to_owned(),
        "%00%ff".to_owned(),
        long_cursor,
        "eyJ9.AAAAAAAAAAAAAAAAAAAAAA".to_owned(),
        tampered,
        format!("{body_part}."),
        format!(".{tag_part}"),
        format!("{body_part}.{tag_part}.{tag_part}"),
        format!("{cursor}%20"),
        format!("{cursor}&limit=-5&cursor=garbage"),
    ];
    for q in &cursors {
        let a = client
            .get(format!("{base}/api/v1/push-tokens?cursor={q}"))
            .bearer_auth(&token)
            .send()
            .await
            .map(|r| Answer::of(&r))
            .map_err(Into::into);
        c.check(
            &format!("GET /api/v1/push-tokens?cursor={q}"),
            a,
            Expect::Problem,
        );
    }

    // Paths and methods no route takes.
    for (method, path) in [
        ("DELETE", "/api/v1/push-tokens/%FF%FE"),
        ("DELETE", "/api/v1/push-tokens/has%20space"),
        (
            "DELETE",
            &format!("/api/v1/push-tokens/{}", "t".repeat(5000)),
        ),
        ("GET", "/api/v1/nope"),
        ("PUT", "/api/v1/me"),
        ("GET", "/api/v1/me/test-push"),
        ("PUT", "/api/v1/push-tokens"),
        ("POST", "/healthz"),
        ("POST", "/readyz"),
        ("POST", "/metrics"),
        ("POST", "/openapi.json"),
        ("DELETE", "/docs"),
    ] {
        let a = client
            .request(method.parse()?, format!("{base}{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .map(|r| Answer::of(&r))
            .map_err(Into::into);
        c.check(&format!("{method} {path}"), a, Expect::Problem);
    }

    // Dot segments, sent as written (an HTTP client would resolve them).
    for path in [
        "/api/v1/me/../../etc/passwd",
        "/api/v1/%2e%2e/%2e%2e/etc/passwd",
    ] {
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nConnection: close"
        );
        let a = raw(port, &head, b"", false).await;
        c.check(&format!("GET {path} (raw)"), a, Expect::Problem);
    }

    // Bad credentials, on every authenticated route (the WebSocket upgrade
    // included): 401 problem+json before anything else is looked at.
    let now = chrono::Utc::now().timestamp();
    let claims = |iss: &str, aud: &str, exp: i64| {
        serde_json::json!({"iss": iss, "aud": aud, "sub": "bad-input", "iat": now - 7200,
            "exp": exp, "auth_time": now - 7200, "firebase": {"sign_in_provider": "password"}})
    };
    let issuer = format!("https://securetoken.google.com/{PROJECT}");
    let expired = keys.sign(&claims(&issuer, PROJECT, now - 3600))?;
    let other_audience = keys.sign(&claims(&issuer, "someone-else", now + 3600))?;
    let other_issuer = keys.sign(&claims("https://evil.example", PROJECT, now + 3600))?;
    let unsigned = {
        let mut parts: Vec<&str> = token.split('.').collect();
        parts.truncate(2);
        format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            parts.get(1).unwrap_or(&"")
        )
    };
    let bad_auths: Vec<(&str, String)> = vec![
        ("no credentials", String::new()),
        ("an empty bearer", "Bearer".into()),
        ("a three-part junk token", "Bearer a.b.c".into()),
        ("Basic credentials", "Basic Zm9vOmJhcg==".into()),
        (
            "a 9,000-character token",
            format!("Bearer {}", "x".repeat(9000)),
        ),
        ("an expired token", format!("Bearer {expired}")),
        (
            "another audience's token",
            format!("Bearer {other_audience}"),
        ),
        ("another issuer's token", format!("Bearer {other_issuer}")),
        ("an alg=none token", format!("Bearer {unsigned}")),
        ("a control character", "Bearer \u{7f}abc".into()),
    ];
    let authed: [(&str, &str); 8] = [
        ("GET", "/api/v1/me"),
        ("PATCH", "/api/v1/me"),
        ("DELETE", "/api/v1/me"),
        ("POST", "/api/v1/me/test-push"),
        ("GET", "/api/v1/push-tokens"),
        ("POST", "/api/v1/push-tokens"),
        ("DELETE", "/api/v1/push-tokens/device-token-0"),
        ("GET", "/ws"),
    ];
    for (method, path) in authed {
        for (name, value) in &bad_auths {
            // Raw, so that even header values a client library refuses
            // reach the server; the WebSocket upgrade with its headers.
            let mut head = if path == "/ws" {
                upgrade_head(port, method, &[], &[])
            } else {
                format!(
                    "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: 2"
                )
            };
            if !value.is_empty() {
                head.push_str(&format!("\r\nAuthorization: {value}"));
            }
            head.push_str("\r\nConnection: close");
            let body: &[u8] = if path == "/ws" { b"" } else { b"{}" };
            let a = raw(port, &head, body, false).await;
            let expect = if value.chars().any(char::is_control) {
                Expect::ParserRefusal
            } else {
                Expect::Problem
            };
            c.check(&format!("{method} {path} with {name}"), a, expect);
        }
    }

    // Broken WebSocket upgrades, with a valid token: a 4xx problem, never
    // a 101 and never a 5xx.
    let auth = format!("Authorization: Bearer {token}");
    let upgrades: Vec<(&str, String)> = vec![
        (
            "no Upgrade header",
            upgrade_head(port, "GET", &[&auth], &["Upgrade"]),
        ),
        (
            "no Connection: Upgrade",
            upgrade_head(port, "GET", &[&auth], &["Connection"]),
        ),
        (
            "no Sec-WebSocket-Key",
            upgrade_head(port, "GET", &[&auth], &["Sec-WebSocket-Key"]),
        ),
        (
            "no Sec-WebSocket-Version",
            upgrade_head(port, "GET", &[&auth], &["Sec-WebSocket-Version"]),
        ),
        (
            "Sec-WebSocket-Version: 99",
            upgrade_head(
                port,
                "GET",
                &[&auth, "Sec-WebSocket-Version: 99"],
                &["Sec-WebSocket-Version"],
            ),
        ),
        (
            "Upgrade: h2c",
            upgrade_head(port, "GET", &[&auth, "Upgrade: h2c"], &["Upgrade"]),
        ),
        (
            "a plain GET",
            format!("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}"),
        ),
        ("POST", upgrade_head(port, "POST", &[&auth], &[])),
        (
            "a junk bearer subprotocol",
            upgrade_head(
                port,
                "GET",
                &["Sec-WebSocket-Protocol: bearer, not-a-token"],
                &[],
            ),
        ),
        (
            "an empty subprotocol list",
            upgrade_head(port, "GET", &["Sec-WebSocket-Protocol: ,,,"], &[]),
        ),
    ];
    for (name, head) in upgrades {
        let a = raw(port, &format!("{head}\r\nConnection: close"), b"", false).await;
        c.check(&format!("GET /ws with {name}"), a, Expect::Problem);
    }

    // DELETE /me, which reads no body: junk with it is ignored, the
    // account is deleted once, and a second delete with the same (now revoked) token is a 401 problem.
    let doomed = keys.token("bad-input-doomed", Some("doomed@chaos.example"), None)?;
    anyhow::ensure!(crate::faults::patch_me(&client, port, &doomed).await? == 201);
    for (name, body, ctype) in bodies.iter().take(6) {
        let a = client
            .delete(format!("{base}/api/v1/me?cascade=maybe&limit=-1"))
            .bearer_auth(&doomed)
            .header("content-type", *ctype)
            .body(body.clone())
            .send()
            .await
            .map(|r| Answer::of(&r))
            .map_err(Into::into);
        c.check(
            &format!("DELETE /api/v1/me with {name}"),
            a,
            Expect::ProblemOrOk,
        );
    }
    let again = client
        .delete(format!("{base}/api/v1/me"))
        .bearer_auth(&doomed)
        .send()
        .await?;
    c.o.sent += 1;
    // The token was issued before the deletion: it proves nothing now.
    if again.status() == 401 && Answer::of(&again).problem() {
        c.o.processed += 1;
    } else {
        c.o.errors += 1;
        c.o.notes.push(format!(
            "DELETE /api/v1/me of a deleted account: {}",
            again.status()
        ));
    }

    // Still serving: the process answers as before.
    let me = client
        .get(format!("{base}/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await?;
    if me.status() != 200 {
        c.o.errors += 1;
        c.o.notes
            .push(format!("GET /api/v1/me afterwards: {}", me.status()));
    }
    let mut o = c.o;
    o.notes.push(format!(
        "{} cases on {} routes; {} refused by the HTTP parser itself with a bare 400 (a control character in a header: no app code runs, so no problem+json)",
        o.sent,
        authed.len() + 5,
        c.parser_refusals
    ));
    Ok(o)
}

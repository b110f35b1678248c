//! Raw HTTP for the bad-input scenario: requests a client library would
//! refuse to send (control characters, broken upgrades, chunked bodies
//! without an end), and how their answers are judged.

use crate::Outcome;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What the server answered: its status and content type.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) ctype: Option<String>,
}

impl Answer {
    pub(crate) fn of(r: &reqwest::Response) -> Self {
        Self {
            status: r.status().as_u16(),
            ctype: r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }

    pub(crate) fn problem(&self) -> bool {
        self.ctype
            .as_deref()
            .is_some_and(|c| c.starts_with("application/problem+json"))
    }
}

/// What an answer to bad input may be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Expect {
    /// A 4xx problem+json.
    Problem,
    /// A 2xx (the input is ignored or clamped), or a 4xx problem+json.
    ProblemOrOk,
    /// A 2xx: what the API documents for this input (a clamped limit, an
    /// empty cursor meaning the first page).
    Ok,
    /// Bytes HTTP does not allow (a control character in a header value):
    /// actix-http's parser answers a bare 400 and closes before any of the
    /// app's code runs, so no problem+json is possible; a 4xx, never a 5xx.
    ParserRefusal,
}

pub(crate) struct Checks {
    pub(crate) o: Outcome,
    /// Cases refused by the HTTP parser, with a bare 400.
    pub(crate) parser_refusals: usize,
}

impl Checks {
    /// Records one case; never a 5xx, never a hang (`answer` is an error
    /// when the server did not answer in time).
    pub(crate) fn check(&mut self, what: &str, answer: anyhow::Result<Answer>, expect: Expect) {
        self.o.sent += 1;
        let good = match &answer {
            Ok(a) if (400..500).contains(&a.status) && expect == Expect::ParserRefusal => {
                self.parser_refusals += usize::from(!a.problem());
                true
            }
            Ok(a) if (400..500).contains(&a.status) => a.problem(),
            Ok(a) if (200..300).contains(&a.status) => {
                matches!(expect, Expect::ProblemOrOk | Expect::Ok)
            }
            _ => false,
        };
        if good {
            self.o.processed += 1;
        } else {
            self.o.errors += 1;
            let what: String = what.chars().take(80).collect();
            self.o.notes.push(match answer {
                Ok(a) => format!("{what}: {} {:?}", a.status, a.ctype),
                Err(e) => format!("{what}: {e:#}"),
            });
        }
    }
}

/// Sends `head` (a request line and headers, without the blank line) and
/// then `body` in `chunks`-sized pieces on one raw connection, and reads the
/// response head. Writing stops quietly once the server has answered and
/// closed; a server that neither answers nor closes in 10 s fails.
pub(crate) async fn raw(
    port: u16,
    head: &str,
    body: &[u8],
    chunked: bool,
) -> anyhow::Result<Answer> {
    let mut s = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await??;
    let (mut rd, mut wr) = s.split();
    let send = async {
        wr.write_all(format!("{head}\r\n\r\n").as_bytes()).await?;
        for piece in body.chunks(64 * 1024) {
            if chunked {
                wr.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await?;
                wr.write_all(piece).await?;
                wr.write_all(b"\r\n").await?;
            } else {
                wr.write_all(piece).await?;
            }
        }
        if chunked {
            wr.write_all(b"0\r\n\r\n").await?;
        }
        std::io::Result::Ok(())
    };
    let read = async {
        let mut got = Vec::new();
        let mut buf = [0_u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        got
    };
    // The server may answer (413) before it has read the whole body, and
    // then stop reading: the answer ends the exchange, not the writing.
    let send_then_wait = async {
        let _ = send.await;
        std::future::pending::<Vec<u8>>().await
    };
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::select! {
            got = read => got,
            got = send_then_wait => got,
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("no answer within 10 s"))?;
    let text = String::from_utf8_lossy(&got);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no HTTP answer (connection closed)"))?;
    let ctype = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-type")
            .then(|| v.trim().to_owned())
    });
    Ok(Answer { status, ctype })
}

/// A well-formed WebSocket upgrade's headers, minus whatever a case drops.
pub(crate) fn upgrade_head(port: u16, method: &str, extra: &[&str], drop: &[&str]) -> String {
    let mut lines = vec![
        format!("{method} /ws HTTP/1.1"),
        format!("Host: 127.0.0.1:{port}"),
    ];
    for h in [
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ] {
        if !drop.iter().any(|d| h.starts_with(d)) {
            lines.push(h.to_owned());
        }
    }
    lines.extend(extra.iter().map(|e| (*e).to_owned()));
    lines.join("\r\n")
}

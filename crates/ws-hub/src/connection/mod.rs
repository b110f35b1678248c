//! One connection's life after the upgrade: a reader (frames in, handlers)
//! and a writer (queue out, pings, the idle timeout and the token's expiry).

use crate::envelope::{self, EnvelopeError};
use crate::hub::{ConnId, Hub, Kick};
use crate::hub::{HandlerContext, MessageHandler};
use actix_ws::{
    AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, ProtocolError, Session,
};
use bytestring::ByteString;
use chrono::{DateTime, Utc};
use domain::FirebaseUid;
use futures_util::FutureExt as _;
use ports::{TokenVerifier, VerifyTokenError};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

mod messages;
use messages::Connection;

/// Who a new connection is, and what it needs beyond its socket.
pub(crate) struct Connected {
    pub(crate) hub: Hub,
    pub(crate) verifier: Arc<dyn TokenVerifier>,
    pub(crate) id: ConnId,
    pub(crate) uid: FirebaseUid,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    /// Its TCP socket, when the server keeps handles (`on_connect`).
    pub(crate) socket: Option<crate::SocketHandle>,
}

/// Unix milliseconds, `i64::MAX` for "never".
fn expiry_ms(at: Option<DateTime<Utc>>) -> i64 {
    at.map_or(i64::MAX, |t| t.timestamp_millis())
}

/// How long until `ms` (unix milliseconds) from now; `None` for never.
fn until(ms: i64) -> Option<Duration> {
    (ms != i64::MAX).then(|| {
        let left = ms.saturating_sub(Utc::now().timestamp_millis());
        Duration::from_millis(u64::try_from(left).unwrap_or(0))
    })
}

/// The close a protocol error earns; `None` when the connection itself
/// broke (nothing can be sent, and it is no client's fault worth a WARN).
fn close_for(e: &ProtocolError) -> Option<CloseReason> {
    match e {
        ProtocolError::Overflow => Some((CloseCode::Size, "message too big").into()),
        // actix-http reports reserved bits (no extension is negotiated) as
        // invalid data; RFC 6455 §5.2 makes them a protocol error.
        ProtocolError::Io(io) if io.to_string().contains("reserved bits") => {
            Some((CloseCode::Protocol, "reserved bits set").into())
        }
        ProtocolError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            Some((CloseCode::Invalid, "text frames must be UTF-8").into())
        }
        // actix-ws reports reassembled fragments over the limit this way.
        ProtocolError::Io(io) if io.to_string().contains("maximum continuation size") => {
            Some((CloseCode::Size, "message too big").into())
        }
        ProtocolError::Io(_) => None,
        _ => Some((CloseCode::Protocol, "protocol error").into()),
    }
}

/// Per-connection budget of WARN lines for bad frames (a flood logs once).
const BAD_FRAME_LOGS: u32 = 5;

/// What the reader and the writer of one connection share.
struct Shared {
    started: Instant,
    /// When the client last sent anything (ms since `started`).
    last_seen_ms: AtomicU64,
    /// Set while the reader waits for a handler slot of its own: the
    /// client's pongs are not read then, so silence is not its fault.
    reader_waiting: AtomicBool,
    /// Why the connection closes; the first to decide wins.
    close: OnceLock<CloseReason>,
    /// Stops both halves (a child of the hub's token for the connection).
    stop: CancellationToken,
    /// When the socket's token expires (unix ms; `i64::MAX`: never). A
    /// `refresh` with a fresh token moves it; the writer closes the socket
    /// with 4001 when it passes.
    expires_at_ms: AtomicI64,
    /// Woken when `expires_at_ms` moves.
    refreshed: tokio::sync::Notify,
}

impl Shared {
    fn seen(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_seen_ms.store(ms, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let seen = Duration::from_millis(self.last_seen_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(seen)
    }

    fn close_with(&self, reason: CloseReason) {
        let _ = self.close.set(reason);
        self.stop.cancel();
    }
}

/// Sends a control frame without ever blocking for long; false if the
/// session is closed.
async fn control(session: &mut Session, ping: bool, payload: &[u8]) -> bool {
    let send = async {
        if ping {
            session.ping(payload).await
        } else {
            session.pong(payload).await
        }
    };
    !matches!(
        tokio::time::timeout(Duration::from_millis(200), send).await,
        Ok(Err(_))
    )
}

/// The reader: inbound frames, dispatched to handlers. Returns when the
/// client closes, the stream breaks or the connection is stopped, handing
/// the stream back: it is kept until the socket is shut, so that actix
/// goes on holding a client that sends and does not read (rather than
/// reading and discarding whatever it sends while the close lingers).
async fn read_loop(
    conn: Connection,
    session: Session,
    mut stream: AggregatedMessageStream,
) -> AggregatedMessageStream {
    read_frames(conn, session, &mut stream).await;
    stream
}

async fn read_frames(
    mut conn: Connection,
    mut session: Session,
    stream: &mut AggregatedMessageStream,
) {
    let shared = conn.shared.clone();
    loop {
        let msg = tokio::select! {
            () = shared.stop.cancelled() => return,
            msg = stream.recv() => msg,
        };
        match msg {
            None => return shared.stop.cancel(),
            Some(Ok(AggregatedMessage::Text(text))) => {
                shared.seen();
                // Boxed: the waiting reader stays small (an idle socket
                // holds only what waits for its next frame).
                Box::pin(conn.on_text(&text)).await;
            }
            Some(Ok(AggregatedMessage::Binary(_))) => {
                shared.seen();
                Box::pin(conn.send_error(&EnvelopeError {
                    code: "binary_not_supported",
                    message: "send JSON envelopes as text frames".into(),
                    id: None,
                }))
                .await;
            }
            Some(Ok(AggregatedMessage::Ping(p))) => {
                shared.seen();
                if !Box::pin(control(&mut session, false, &p)).await {
                    return shared.stop.cancel();
                }
            }
            Some(Ok(AggregatedMessage::Pong(_))) => shared.seen(),
            Some(Ok(AggregatedMessage::Close(reason))) => {
                return shared.close_with(reason.unwrap_or_else(|| CloseCode::Normal.into()));
            }
            Some(Err(e)) => {
                match close_for(&e) {
                    Some(reason) => {
                        tracing::warn!(conn = conn.id, error = %e, "websocket protocol error; closing");
                        shared.close_with(reason);
                    }
                    None => {
                        tracing::debug!(conn = conn.id, error = %e, "websocket connection lost");
                        shared.stop.cancel();
                    }
                }
                return;
            }
        }
    }
}

/// The writer: drains the outbound queue, pings, and enforces the idle
/// timeout, a write deadline and the token's expiry. It never waits on the
/// reader, so a busy reader cannot stall heartbeats and a stalled client
/// cannot stall reads. One timer serves the ping, the expiry notice and the
/// expiry (whichever comes first), so an idle socket holds one.
async fn write_loop(
    session: &mut Session,
    rx: &mut crate::send_queue::Receiver,
    shared: &Shared,
    ping_interval: Duration,
    idle_timeout: Duration,
) {
    let notice_ms = i64::try_from(crate::EXPIRY_NOTICE.as_millis()).unwrap_or(i64::MAX);
    let mut next_ping = tokio::time::Instant::now() + ping_interval;
    // The expiry this loop last told the client about.
    let mut noticed = None;
    loop {
        let expires_at = shared.expires_at_ms.load(Ordering::Relaxed);
        let now = tokio::time::Instant::now();
        // An expiry too far off to count in `Instant`s is "never".
        let expiry = until(expires_at).and_then(|d| now.checked_add(d));
        let notice = (noticed != Some(expires_at))
            .then(|| until(expires_at.saturating_sub(notice_ms)).and_then(|d| now.checked_add(d)))
            .flatten();
        let deadline = [expiry, notice]
            .into_iter()
            .flatten()
            .fold(next_ping, std::cmp::Ord::min);
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => return,
            () = shared.refreshed.notified() => continue,
            () = tokio::time::sleep_until(deadline) => {
                let now = tokio::time::Instant::now();
                if expiry.is_some_and(|at| at <= now) {
                    let reason = ports::Disconnect::token_expired();
                    return shared.close_with((CloseCode::Other(reason.code), reason.reason).into());
                }
                if notice.is_some_and(|at| at <= now) {
                    noticed = Some(expires_at);
                    let at = DateTime::<Utc>::from_timestamp_millis(expires_at).map(|t| t.to_rfc3339());
                    let text = envelope::render(crate::TOKEN_EXPIRING_TYPE, None, &serde_json::json!({"expires_at": at}));
                    if !matches!(Box::pin(tokio::time::timeout(idle_timeout, session.text(text))).await, Ok(Ok(()))) {
                        return shared.stop.cancel();
                    }
                }
                if next_ping <= now {
                    let waiting = shared.reader_waiting.load(Ordering::Relaxed);
                    if !waiting && shared.silent_for() > idle_timeout {
                        return shared.close_with((CloseCode::Policy, "idle timeout: no pong").into());
                    }
                    if !Box::pin(control(session, true, b"")).await {
                        return shared.stop.cancel();
                    }
                    next_ping = tokio::time::Instant::now() + ping_interval;
                }
            }
            next = rx.recv() => {
                let Some(text) = next else { return shared.stop.cancel() };
                // A client that accepts nothing for `idle_timeout` is gone
                // or too slow; the hub also drops it when its queue fills.
                // A send with room goes out even when the stop came at the
                // same time (a disconnect order queues its notice, then
                // stops the writer); one still waiting when the stop comes
                // goes back to the head of the queue, for the close to
                // send if it can.
                let sent = Box::pin(async {
                    tokio::select! {
                        biased;
                        r = tokio::time::timeout(idle_timeout, session.text(text.clone())) => Some(r),
                        () = shared.stop.cancelled() => None,
                    }
                })
                .await;
                let Some(sent) = sent else {
                    rx.put_back(text);
                    return;
                };
                match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return shared.stop.cancel(),
                    Err(_) => {
                        metrics::counter!("ws_slow_client_disconnects_total").increment(1);
                        tracing::warn!("client accepted nothing for the idle timeout; disconnecting it");
                        return shared.close_with((CloseCode::Policy, "too slow: writes stalled").into());
                    }
                }
            }
        }
    }
}

/// After a disconnect order: what was queued before it (its notice
/// included) goes out, briefly, ahead of the close frame.
async fn flush(session: &mut Session, rx: &mut crate::send_queue::Receiver) {
    let send_queued = async {
        while let Some(text) = rx.try_recv() {
            if session.text(text).await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), send_queued).await;
}

/// Starts a connection's reader and writer tasks. Set up here, not in an
/// async fn, so neither task carries what only the start needs (the
/// stream's and the identity's slots would stay in an async fn's state for
/// the connection's whole life).
pub(crate) fn run(
    connected: Connected,
    session: Session,
    stream: AggregatedMessageStream,
    rx: crate::send_queue::Receiver,
    kick: Kick,
) {
    let Connected {
        hub,
        verifier,
        id,
        uid,
        expires_at,
        socket,
    } = connected;
    // Copy what the loops need rather than hold a clone of the settings.
    let (per_connection, ping_interval, idle_timeout) = {
        let s = hub.settings();
        (
            s.per_connection_concurrency.max(1),
            s.ping_interval,
            s.idle_timeout,
        )
    };
    let shared = Arc::new(Shared {
        started: Instant::now(),
        last_seen_ms: AtomicU64::new(0),
        reader_waiting: AtomicBool::new(false),
        close: OnceLock::new(),
        stop: kick.token.child_token(),
        expires_at_ms: AtomicI64::new(expiry_ms(expires_at)),
        refreshed: tokio::sync::Notify::new(),
    });
    let conn = Connection {
        hub: hub.clone(),
        verifier,
        id,
        uid,
        permits: Arc::new(Semaphore::new(per_connection)),
        shared: shared.clone(),
        bad_frames: 0,
    };
    let reader = read_loop(conn, session.clone(), stream);
    actix_web::rt::spawn(connection(
        reader,
        Writer {
            hub,
            id,
            kick,
            shared,
            ping_interval,
            idle_timeout,
            socket,
        },
        session,
        rx,
    ));
}

/// What the writer holds besides the socket and its queue.
struct Writer {
    hub: Hub,
    id: ConnId,
    kick: Kick,
    shared: Arc<Shared>,
    ping_interval: Duration,
    idle_timeout: Duration,
    socket: Option<crate::SocketHandle>,
}

/// One task per connection: the reader and the writer run side by side in
/// it (neither waits for the other; actix runs a worker's tasks on one
/// thread anyway), then the close.
async fn connection(
    reader: impl std::future::Future<Output = AggregatedMessageStream>,
    w: Writer,
    mut session: Session,
    mut rx: crate::send_queue::Receiver,
) {
    let writer = async {
        write_loop(
            &mut session,
            &mut rx,
            &w.shared,
            w.ping_interval,
            w.idle_timeout,
        )
        .await;
        w.shared.stop.cancel();
        w.hub.unregister(w.id);
    };
    let (stream, ()) = tokio::join!(reader, writer);
    // What follows runs once, at the end: boxed, it takes no room in an
    // idle connection's task.
    Box::pin(finish(w.hub, w.id, session, rx, w.kick, w.shared, w.socket)).await;
    drop(stream);
}

async fn finish(
    hub: Hub,
    id: ConnId,
    mut session: Session,
    mut rx: crate::send_queue::Receiver,
    kick: Kick,
    shared: Arc<Shared>,
    socket: Option<crate::SocketHandle>,
) {
    hub.unregister(id);
    let ordered = kick.reason.get().cloned();
    if ordered.is_some() {
        flush(&mut session, &mut rx).await;
    }
    let close = shared.close.get().cloned().or_else(|| {
        // Stopped by the hub: a disconnect order, shutdown, or a push to a
        // full queue.
        kick.token.is_cancelled().then(|| match ordered {
            Some(reason) => (CloseCode::Other(reason.code), reason.reason).into(),
            None if hub.is_shutting_down() => (CloseCode::Away, "server shutting down").into(),
            None => (CloseCode::Policy, "too slow: outbound queue full").into(),
        })
    });
    let code = close.as_ref().map(|c| u16::from(c.code));
    let not_reading = close.as_ref().is_some_and(|c| {
        c.code == CloseCode::Policy
            && c.description
                .as_deref()
                .is_some_and(|d| d.starts_with("too slow"))
    });
    // The close frame waits behind what the client has not read yet.
    let _ = tokio::time::timeout(Duration::from_secs(1), session.close(close)).await;
    tracing::info!(conn = id, close_code = ?code, "websocket closed");
    // Then the socket goes, whatever actix still buffers for it: at once
    // for a client that reads nothing, after a moment for one that may
    // still be reading its last frames.
    if let Some(socket) = socket {
        if !not_reading {
            tokio::time::sleep(crate::CLOSE_LINGER).await;
        }
        socket.shut();
    }
}

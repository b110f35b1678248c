//! One connection's inbound messages: the envelope dispatch, `refresh`, and
//! the error replies to frames it cannot take.

use super::*;

pub(super) struct Connection {
    pub(super) hub: Hub,
    pub(super) verifier: Arc<dyn TokenVerifier>,
    pub(super) id: ConnId,
    pub(super) uid: FirebaseUid,
    pub(super) permits: Arc<Semaphore>,
    pub(super) shared: Arc<Shared>,
    pub(super) bad_frames: u32,
}

impl Connection {
    pub(super) async fn send_error(&mut self, e: &EnvelopeError) {
        self.bad_frames += 1;
        if self.bad_frames <= BAD_FRAME_LOGS {
            tracing::warn!(conn = self.id, code = e.code, message = %e.message, "bad websocket frame");
        } else if self.bad_frames == BAD_FRAME_LOGS + 1 {
            tracing::warn!(
                conn = self.id,
                "more bad frames on this connection; no longer logging them"
            );
        }
        metrics::counter!("ws_bad_frames_total", "code" => e.code).increment(1);
        self.hub
            .reply_to(
                self.id,
                envelope::ERROR_TYPE,
                ByteString::from(envelope::render_error(e)),
            )
            .await;
    }

    /// `refresh`: a fresh token for the same user moves the socket's expiry.
    async fn refresh(&mut self, id: Option<String>, data: serde_json::Value) {
        metrics::counter!("ws_messages_in_total", "type" => crate::REFRESH_TYPE).increment(1);
        let refused = |code: &'static str, message: &str| EnvelopeError {
            code,
            message: message.to_owned(),
            id: id.clone(),
        };
        let Some(token) = data.get("token").and_then(serde_json::Value::as_str) else {
            return self
                .send_error(&refused("invalid_data", "send {\"token\": \"<ID token>\"}"))
                .await;
        };
        let identity = match self.verifier.verify(token).await {
            Ok(identity) => identity,
            Err(VerifyTokenError::Invalid(reason)) => {
                tracing::info!(conn = self.id, reason = %reason, "websocket token refresh refused");
                return self
                    .send_error(&refused("invalid_token", "the token is not valid"))
                    .await;
            }
            Err(VerifyTokenError::Unavailable(_) | VerifyTokenError::Unknown(_)) => {
                return self
                    .send_error(&refused(
                        "unavailable",
                        "cannot check tokens now; try again shortly",
                    ))
                    .await;
            }
        };
        if identity.uid != self.uid {
            return self
                .send_error(&refused("token_mismatch", "the token is another user's"))
                .await;
        }
        let ms = expiry_ms(identity.expires_at);
        self.shared.expires_at_ms.store(ms, Ordering::Relaxed);
        self.shared.refreshed.notify_one();
        let expires_at = identity.expires_at.map(|t| t.to_rfc3339());
        let text = envelope::render(
            "refreshed",
            id.as_deref(),
            &serde_json::json!({"expires_at": expires_at}),
        );
        self.hub
            .reply_to(self.id, "refreshed", ByteString::from(text))
            .await;
    }

    pub(super) async fn on_text(&mut self, text: &str) {
        let env = match envelope::parse(text) {
            Ok(env) => env,
            Err(e) => return self.send_error(&e).await,
        };
        if env.kind == crate::REFRESH_TYPE {
            return self.refresh(env.id, env.data).await;
        }
        let Some(handler) = self.hub.handler(&env.kind) else {
            metrics::counter!("ws_messages_in_total", "type" => "unknown").increment(1);
            return self
                .send_error(&EnvelopeError {
                    code: "unknown_type",
                    message: format!(
                        "no handler for type {:?}",
                        env.kind.chars().take(64).collect::<String>()
                    ),
                    id: env.id,
                })
                .await;
        };
        metrics::counter!("ws_messages_in_total", "type" => env.kind.clone()).increment(1);
        // Waiting for one of this connection's slots stops reading it
        // (backpressure on a client that sends faster than its handlers
        // finish); the writer keeps sending and pinging meanwhile.
        self.shared.reader_waiting.store(true, Ordering::Relaxed);
        let conn_permit = tokio::select! {
            p = self.permits.clone().acquire_owned() => p.ok(),
            () = self.shared.stop.cancelled() => None,
        };
        self.shared.reader_waiting.store(false, Ordering::Relaxed);
        let Some(conn_permit) = conn_permit else {
            return;
        };
        let ctx = HandlerContext {
            uid: self.uid.clone(),
            conn: self.id,
            id: env.id.clone(),
            cancel: self.shared.stop.child_token(),
            hub: self.hub.clone(),
            hub_slot: crate::hub::HubSlot::default(),
        };
        let hub_permits = self.hub.inner.handler_permits.clone();
        actix_web::rt::spawn(dispatch(
            handler,
            ctx,
            env.kind,
            env.data,
            conn_permit,
            hub_permits,
        ));
    }
}

/// Runs one handler call and queues its reply. The hub-wide slot is waited
/// for here, not in the reader (busy handlers elsewhere never stall this
/// connection's traffic), and held only while the handler runs; the
/// connection's own slot is held until the reply is queued, so a client
/// that sends and never reads has at most its own bound of replies
/// waiting, and then is not read any more.
pub(super) async fn dispatch(
    handler: Arc<dyn MessageHandler>,
    mut ctx: HandlerContext,
    kind: String,
    data: serde_json::Value,
    conn_permit: OwnedSemaphorePermit,
    hub_permits: Arc<Semaphore>,
) {
    let hub_permit = tokio::select! {
        p = hub_permits.acquire_owned() => p.ok(),
        () = ctx.cancel.cancelled() => None,
    };
    let Some(hub_permit) = hub_permit else {
        return;
    };
    ctx.hub_slot = crate::hub::HubSlot::hold(hub_permit);
    let started = Instant::now();
    let call = AssertUnwindSafe(handler.handle(&ctx, data)).catch_unwind();
    let outcome = tokio::select! {
        r = call => Some(r),
        () = ctx.cancel.cancelled() => None,
    };
    ctx.hub_slot.release();
    metrics::histogram!("ws_handler_duration_seconds", "type" => kind.clone())
        .record(started.elapsed().as_secs_f64());
    let (reply_kind, text) = match outcome {
        None | Some(Ok(Ok(None))) => return,
        Some(Ok(Ok(Some(reply)))) => {
            let text = envelope::render(&reply.kind, ctx.id.as_deref(), &reply.data);
            (reply.kind, text)
        }
        Some(Ok(Err(e))) => (
            envelope::ERROR_TYPE.to_owned(),
            envelope::render_error(&EnvelopeError {
                code: e.code,
                message: e.message,
                id: ctx.id.clone(),
            }),
        ),
        Some(Err(_)) => {
            tracing::error!(conn = ctx.conn, r#type = %kind, "websocket handler panicked");
            (
                envelope::ERROR_TYPE.to_owned(),
                envelope::render_error(&EnvelopeError {
                    code: "internal_error",
                    message: "the handler failed".into(),
                    id: ctx.id.clone(),
                }),
            )
        }
    };
    ctx.reply(&reply_kind, ByteString::from(text)).await;
    drop(conn_permit);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::HubSettings;

    #[tokio::test]
    async fn a_reply_waiting_for_room_holds_its_connection_slot_but_never_the_hub_slot() {
        let hub = Hub::new(HubSettings {
            handler_concurrency: 1,
            outbound_queue: 1,
            idle_timeout: Duration::from_secs(30),
            ..HubSettings::new("test")
        });
        let uid = FirebaseUid::parse("never-reads").unwrap();
        let (id, mut rx, _kick) = hub.register(uid.clone()).unwrap();
        // Its queue is full: the client reads nothing.
        assert_eq!(
            hub.send_to(id, ByteString::from_static("unread")),
            crate::hub::SendOutcome::Queued
        );
        let conn_slots = Arc::new(Semaphore::new(1));
        let ctx = HandlerContext {
            uid,
            conn: id,
            id: Some("s1".into()),
            cancel: CancellationToken::new(),
            hub: hub.clone(),
            hub_slot: crate::hub::HubSlot::default(),
        };
        let hub_slots = hub.inner.handler_permits.clone();
        let call = tokio::spawn(dispatch(
            hub.handler("subscribe").unwrap(),
            ctx,
            "subscribe".into(),
            serde_json::json!({"topic": "public:news"}),
            conn_slots.clone().acquire_owned().await.unwrap(),
            hub_slots.clone(),
        ));
        // The subscribe ran and now waits to queue its reply (for up to
        // the idle timeout): the hub's only slot is free for everyone
        // else meanwhile, the connection's own is still taken.
        let deadline = Instant::now() + hub.settings().idle_timeout / 2;
        while hub_slots.available_permits() == 0 || hub.local_sockets_in("public:news") == 0 {
            assert!(
                Instant::now() < deadline,
                "the hub slot was never given back"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!call.is_finished());
        assert_eq!(conn_slots.available_permits(), 0);
        // The client reads: the reply goes out, the connection's slot too.
        assert_eq!(rx.recv().await.as_deref(), Some("unread"));
        call.await.unwrap();
        let reply: serde_json::Value = serde_json::from_str(&rx.recv().await.unwrap()).unwrap();
        assert_eq!(
            (reply["type"].as_str(), reply["id"].as_str()),
            (Some("subscribed"), Some("s1"))
        );
        assert_eq!(conn_slots.available_permits(), 1);
    }
}

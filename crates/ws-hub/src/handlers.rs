//! The built-in message handlers: `echo`, `subscribe`, `unsubscribe`,
//! `presence`, `publish` and `ack`.

use crate::hub::{HandlerContext, HandlerError, MessageHandler, Reply};
use async_trait::async_trait;
use bytestring::ByteString;
use serde_json::{Value, json};
use std::sync::Arc;

/// `echo`: replies with the same data (for clients to test the channel).
struct Echo;

#[async_trait]
impl MessageHandler for Echo {
    async fn handle(&self, _: &HandlerContext, data: Value) -> Result<Option<Reply>, HandlerError> {
        Ok(Some(Reply::new("echo", data)))
    }
}

#[derive(serde::Deserialize)]
struct TopicRequest {
    topic: String,
    #[serde(default)]
    since: Option<ports::StreamPosition>,
    #[serde(default)]
    data: Option<Value>,
}

fn request(data: Value) -> Result<TopicRequest, HandlerError> {
    serde_json::from_value(data).map_err(|_| {
        HandlerError::new(
            "invalid_data",
            "data must be {\"topic\": string, \"since\"?: {\"offset\": number, \"epoch\": string}}",
        )
    })
}

fn unavailable() -> HandlerError {
    HandlerError::new("unavailable", "cannot check that now; try again shortly")
}

/// The namespace of `topic`, if `ctx`'s user may subscribe to it.
async fn allowed(
    ctx: &HandlerContext,
    topic: &str,
    publish: bool,
) -> Result<crate::namespaces::Namespace, HandlerError> {
    let forbidden = || HandlerError::new("forbidden_topic", "no such topic, or you may not use it");
    let (ns, name) = ctx.hub.namespace_of(topic).ok_or_else(forbidden)?;
    let may = if publish {
        ns.policy.may_publish(&ctx.uid, name).await
    } else {
        ns.policy.may_subscribe(&ctx.uid, name).await
    };
    match may {
        Ok(true) => Ok(ns),
        Ok(false) => Err(forbidden()),
        Err(e) => {
            tracing::warn!(error = %e, topic, "topic policy could not decide");
            Err(unavailable())
        }
    }
}

/// `subscribe {"topic", "since"?}` -> `subscribed {"topic", "offset"?,
/// "epoch"?, "recovered"?}`, then (when recovering) what was missed, in
/// order, then live messages; in a presence namespace, then `join`.
struct Subscribe;

#[async_trait]
impl MessageHandler for Subscribe {
    async fn handle(
        &self,
        ctx: &HandlerContext,
        data: Value,
    ) -> Result<Option<Reply>, HandlerError> {
        let req = request(data)?;
        let topic = req.topic;
        let ns = allowed(ctx, &topic, false).await?;
        let recording = ctx.hub.recording(&topic);
        if !ctx.hub.subscribe(ctx.conn, &topic, recording.is_some()) {
            return Err(HandlerError::new(
                "too_many_topics",
                "this connection is at its topic limit",
            ));
        }
        let (reply, missed) = match recording {
            None => (json!({"topic": topic}), None),
            Some((options, history)) => {
                let read = history.history(&topic, req.since.as_ref(), &options).await;
                if req.since.is_some() {
                    let outcome = match &read {
                        Ok(r) if r.recovered => "recovered",
                        _ => "lost",
                    };
                    metrics::counter!("ws_recoveries_total", "outcome" => outcome).increment(1);
                }
                match read {
                    Ok(read) => (
                        json!({
                            "topic": topic,
                            "offset": read.position.offset,
                            "epoch": read.position.epoch,
                            "recovered": read.recovered,
                        }),
                        Some((read.publications, Some(read.position))),
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, topic, "topic history unavailable; subscribing without it");
                        (
                            json!({"topic": topic, "recovered": false}),
                            Some((Vec::new(), None)),
                        )
                    }
                }
            }
        };
        // The reply goes first, then what was missed, then live messages.
        let text = crate::envelope::render("subscribed", ctx.id.as_deref(), &reply);
        ctx.reply("subscribed", ByteString::from(text)).await;
        if let Some((publications, position)) = missed {
            if let Some(position) = &position {
                for p in publications {
                    let at = ports::StreamPosition {
                        offset: p.offset,
                        epoch: position.epoch.clone(),
                    };
                    let text =
                        crate::envelope::render_message(&p.notification, Some(&topic), Some(&at));
                    ctx.reply(&p.notification.kind, ByteString::from(text))
                        .await;
                }
            }
            ctx.hub.go_live(ctx.conn, &topic, position.as_ref());
        }
        if ns.options.presence {
            ctx.hub
                .joined(ctx.conn, &ctx.uid, &topic, ns.options.join_leave)
                .await;
        }
        Ok(None)
    }
}

/// `unsubscribe {"topic": ..}` -> `unsubscribed`.
struct Unsubscribe;

#[async_trait]
impl MessageHandler for Unsubscribe {
    async fn handle(
        &self,
        ctx: &HandlerContext,
        data: Value,
    ) -> Result<Option<Reply>, HandlerError> {
        let topic = request(data)?.topic;
        if ctx.hub.unsubscribe(ctx.conn, &topic) {
            ctx.hub.left(ctx.conn, &ctx.uid, topic.clone());
        }
        Ok(Some(Reply::new("unsubscribed", json!({"topic": topic}))))
    }
}

/// `presence {"topic"}` -> `presence {"topic", "clients": [{"client", "uid"}]}`.
struct Presence;

#[async_trait]
impl MessageHandler for Presence {
    async fn handle(
        &self,
        ctx: &HandlerContext,
        data: Value,
    ) -> Result<Option<Reply>, HandlerError> {
        let topic = request(data)?.topic;
        let ns = allowed(ctx, &topic, false).await?;
        let store = ctx.hub.presence_store().filter(|_| ns.options.presence);
        let Some(store) = store else {
            return Err(HandlerError::new(
                "presence_off",
                "this topic does not track presence",
            ));
        };
        let clients = store.present(&topic).await.map_err(|e| {
            tracing::warn!(error = %e, "presence unavailable");
            unavailable()
        })?;
        Ok(Some(Reply::new(
            "presence",
            json!({"topic": topic, "clients": clients}),
        )))
    }
}

/// `publish {"topic", "data"}` -> `published {"topic", "offset"?,
/// "epoch"?}`; subscribers get `publication {"uid", "data"}`.
struct Publish;

#[async_trait]
impl MessageHandler for Publish {
    async fn handle(
        &self,
        ctx: &HandlerContext,
        data: Value,
    ) -> Result<Option<Reply>, HandlerError> {
        let req = request(data)?;
        let topic = req.topic;
        let ns = allowed(ctx, &topic, true).await?;
        if !ns.options.client_publish {
            return Err(HandlerError::new(
                "publish_forbidden",
                "clients may not publish to this topic",
            ));
        }
        let notification = ports::Notification::new(
            "publication",
            json!({"uid": ctx.uid.as_str(), "data": req.data.unwrap_or(Value::Null)}),
        );
        let notifier = crate::HubNotifier::new(ctx.hub.clone());
        let position = ports::Realtime::publish(&notifier, &topic, &notification)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, topic, "client publication not fanned out");
                unavailable()
            })?;
        let mut reply = json!({"topic": topic});
        if let Some(p) = position {
            reply["offset"] = p.offset.into();
            reply["epoch"] = p.epoch.into();
        }
        Ok(Some(Reply::new("published", reply)))
    }
}

/// `ack {"delivery"}`: the client got a message sent with that delivery id
/// (no reply).
struct Ack;

#[async_trait]
impl MessageHandler for Ack {
    async fn handle(
        &self,
        ctx: &HandlerContext,
        data: Value,
    ) -> Result<Option<Reply>, HandlerError> {
        let Some(delivery) = data
            .get("delivery")
            .and_then(Value::as_str)
            .filter(|d| (1..=128).contains(&d.len()))
        else {
            return Err(HandlerError::new(
                "invalid_data",
                "data must be {\"delivery\": string}",
            ));
        };
        crate::HubNotifier::new(ctx.hub.clone())
            .ack(&ctx.uid, delivery)
            .await;
        Ok(None)
    }
}

/// The built-in message types and their handlers, which a hub starts with
/// (an application may replace any).
pub(crate) fn builtins() -> [(&'static str, Arc<dyn MessageHandler>); 6] {
    [
        ("echo", Arc::new(Echo)),
        ("subscribe", Arc::new(Subscribe)),
        ("unsubscribe", Arc::new(Unsubscribe)),
        ("presence", Arc::new(Presence)),
        ("publish", Arc::new(Publish)),
        ("ack", Arc::new(Ack)),
    ]
}

//! Topics: namespaces with their options and policies, each subscription's
//! place in its topic's history, and presence.

use crate::hub::{ConnId, Hub};
use async_trait::async_trait;
use bytestring::ByteString;
use domain::FirebaseUid;
use ports::{
    HistoryOptions, NamespaceOptions, NotifyError, PresenceEntry, StreamPosition, TopicPolicy,
};
use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;
use std::time::Duration;

/// Longest topic name after its namespace.
pub const MAX_TOPIC_NAME: usize = 100;

/// A declared namespace.
#[derive(Clone)]
pub(crate) struct Namespace {
    pub(crate) options: NamespaceOptions,
    pub(crate) policy: Arc<dyn TopicPolicy>,
}

/// The namespaces a hub serves: `public` and `user` unless replaced.
pub(crate) struct Namespaces(HashMap<String, Namespace>);

impl Namespaces {
    pub(crate) fn builtin(user_history: Option<HistoryOptions>) -> Self {
        let mut all = HashMap::new();
        all.insert(
            "public".to_owned(),
            Namespace {
                options: NamespaceOptions::default(),
                policy: Arc::new(AnyUser),
            },
        );
        all.insert(
            "user".to_owned(),
            Namespace {
                options: NamespaceOptions {
                    history: user_history,
                    ..NamespaceOptions::default()
                },
                policy: Arc::new(OwnUser),
            },
        );
        Self(all)
    }

    pub(crate) fn insert(&mut self, name: &str, ns: Namespace) {
        self.0.insert(name.to_owned(), ns);
    }

    /// The namespace of `topic` and the name within it, if `topic` is
    /// `<declared namespace>:<1 to 100 of [A-Za-z0-9-_.:]>`.
    pub(crate) fn resolve<'t>(&self, topic: &'t str) -> Option<(Namespace, &'t str)> {
        let (ns, name) = topic.split_once(':')?;
        let valid = (1..=MAX_TOPIC_NAME).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        valid.then(|| self.0.get(ns).map(|n| (n.clone(), name)))?
    }
}

/// `public:<name>`: anyone signed in may subscribe.
#[derive(Debug, Clone, Copy)]
pub struct AnyUser;

#[async_trait]
impl TopicPolicy for AnyUser {
    async fn may_subscribe(&self, _: &FirebaseUid, _: &str) -> Result<bool, NotifyError> {
        Ok(true)
    }
}

/// `user:<uid>`: only that user.
#[derive(Debug, Clone, Copy)]
pub struct OwnUser;

#[async_trait]
impl TopicPolicy for OwnUser {
    async fn may_subscribe(&self, uid: &FirebaseUid, name: &str) -> Result<bool, NotifyError> {
        Ok(uid.as_str() == name)
    }
}

/// One connection's subscription to one topic.
#[derive(Debug, Default)]
pub(crate) struct Sub {
    /// The last offset sent (0: none known yet).
    last: u64,
    /// The hash of the epoch `last` belongs to.
    epoch: u64,
    /// Set while recovering: live messages wait here, with their place.
    pub(crate) pending: Option<Vec<(StreamPosition, ByteString)>>,
}

/// What to do with a recorded message for one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    Deliver,
    /// Sent already (the seam between recovery and live messages).
    Duplicate,
    /// One or more before it never arrived, or the epoch changed.
    Gap,
}

fn epoch_hash(epoch: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    epoch.hash(&mut h);
    h.finish().max(1)
}

impl Sub {
    /// The subscription has been sent everything up to `p`.
    pub(crate) fn seen(&mut self, p: &StreamPosition) {
        self.last = p.offset;
        self.epoch = epoch_hash(&p.epoch);
    }

    /// Whether the message at `p` comes next; if so it is counted as sent.
    pub(crate) fn admit(&mut self, p: &StreamPosition) -> Admit {
        let epoch = epoch_hash(&p.epoch);
        let known = self.epoch != 0;
        let verdict = if !known {
            Admit::Deliver
        } else if epoch != self.epoch {
            Admit::Gap
        } else if p.offset <= self.last {
            Admit::Duplicate
        } else if p.offset == self.last + 1 {
            Admit::Deliver
        } else {
            Admit::Gap
        };
        if verdict == Admit::Deliver {
            self.last = p.offset;
            self.epoch = epoch;
        }
        verdict
    }
}

/// Why a subscription ended without the client asking.
pub const INSUFFICIENT_STATE: &str = "insufficient_state";

/// Tells a connection its subscription to `topic` lost messages (or
/// could not hold them while recovering): it was dropped, and the client
/// subscribes again with `since` to recover.
pub(crate) fn tell_to_resubscribe(hub: &Hub, id: ConnId, topic: &str) {
    metrics::counter!("ws_resubscribe_total").increment(1);
    tracing::info!(
        conn = id,
        topic,
        "subscription lost messages; told to resubscribe"
    );
    let text = crate::envelope::render(
        "unsubscribed",
        None,
        &serde_json::json!({"topic": topic, "reason": INSUFFICIENT_STATE}),
    );
    hub.send_to(id, ByteString::from(text));
}

/// The presence id of a connection: `<instance>/<connection>`.
pub(crate) fn client_id(hub: &Hub, id: ConnId) -> String {
    format!("{}/{id}", hub.settings().instance_id)
}

/// A connection joined `topic` in a namespace with presence: its entry is
/// added (and refreshed until it leaves) and, with `join_leave`, the
/// topic is told.
pub(crate) async fn joined(
    hub: &Hub,
    id: ConnId,
    uid: &FirebaseUid,
    topic: &str,
    join_leave: bool,
) {
    let Some(store) = hub.presence_store().cloned() else {
        return;
    };
    if !hub.mark_present(id, topic) {
        return;
    }
    let client = client_id(hub, id);
    let entry = PresenceEntry {
        client: client.clone(),
        uid: uid.as_str().to_owned(),
    };
    let ttl = hub.settings().presence_ttl;
    if let Err(e) = store.join(&[(topic.to_owned(), entry)], ttl).await {
        tracing::warn!(error = %e, "presence entry not added yet (the next refresh retries)");
    }
    if join_leave {
        crate::HubNotifier::new(hub.clone())
            .presence_notice("join", topic, &client, uid.as_str())
            .await;
    }
}

/// A connection left `topic`'s presence set: removes its entry and, where
/// the namespace says so, tells the topic.
pub(crate) fn left(hub: &Hub, id: ConnId, uid: &FirebaseUid, topic: String) {
    let Some(store) = hub.presence_store().cloned() else {
        return;
    };
    let join_leave = hub
        .namespace_of(&topic)
        .is_some_and(|(ns, _)| ns.options.join_leave);
    let client = client_id(hub, id);
    let notifier = crate::HubNotifier::new(hub.clone());
    let uid = uid.as_str().to_owned();
    tokio::spawn(async move {
        if let Err(e) = store.leave(&topic, &client).await {
            tracing::debug!(error = %e, "presence leave not recorded (the entry expires)");
        }
        if join_leave {
            notifier
                .presence_notice("leave", &topic, &client, &uid)
                .await;
        }
    });
}

/// Refreshes this instance's presence entries every third of their life.
pub(crate) async fn refresh_presence(hub: Hub, store: Arc<dyn ports::PresenceStore>) {
    let ttl = hub.settings().presence_ttl;
    // A zero ttl (a hub built by hand) must not make a zero period, which
    // `interval` refuses.
    let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = hub.inner.shutdown.cancelled() => return,
        }
        let entries: Vec<(String, PresenceEntry)> = hub
            .present()
            .into_iter()
            .map(|(topic, id, uid)| {
                (
                    topic,
                    PresenceEntry {
                        client: client_id(&hub, id),
                        uid,
                    },
                )
            })
            .collect();
        for chunk in entries.chunks(500) {
            if let Err(e) = store.join(chunk, ttl).await {
                tracing::warn!(error = %e, "presence not refreshed");
                break;
            }
        }
    }
}

impl Hub {
    /// Declares (or replaces) the namespace `name`: topics `name:<id>`
    /// with `options`, joined and published to as `policy` allows.
    pub fn namespace(
        &self,
        name: &str,
        options: NamespaceOptions,
        policy: Arc<dyn TopicPolicy>,
    ) -> &Self {
        self.inner
            .namespaces
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name, Namespace { options, policy });
        self
    }

    pub(crate) fn namespace_of<'t>(&self, topic: &'t str) -> Option<(Namespace, &'t str)> {
        self.inner
            .namespaces
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .resolve(topic)
    }

    /// The history options of `topic`, when it keeps history and the hub
    /// has somewhere to keep it.
    pub(crate) fn recording(
        &self,
        topic: &str,
    ) -> Option<(HistoryOptions, Arc<dyn ports::TopicHistory>)> {
        let (ns, _) = self.namespace_of(topic)?;
        Some((ns.options.history?, self.history()?.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64, epoch: &str) -> StreamPosition {
        StreamPosition {
            offset,
            epoch: epoch.into(),
        }
    }

    #[test]
    fn a_subscription_admits_each_offset_once_and_in_order() {
        let mut sub = Sub::default();
        sub.seen(&at(3, "e"));
        assert_eq!(sub.admit(&at(2, "e")), Admit::Duplicate);
        assert_eq!(sub.admit(&at(3, "e")), Admit::Duplicate);
        assert_eq!(sub.admit(&at(4, "e")), Admit::Deliver);
        assert_eq!(sub.admit(&at(6, "e")), Admit::Gap);
        assert_eq!(sub.admit(&at(5, "x")), Admit::Gap);
        let mut fresh = Sub::default();
        assert_eq!(fresh.admit(&at(9, "e")), Admit::Deliver);
        assert_eq!(fresh.admit(&at(10, "e")), Admit::Deliver);
    }

    #[test]
    fn topics_resolve_to_declared_namespaces_with_valid_names() {
        let ns = Namespaces::builtin(None);
        assert!(ns.resolve("public:news").is_some());
        assert!(ns.resolve("user:alice").is_some());
        assert!(ns.resolve("room:1").is_none());
        assert!(ns.resolve("public:").is_none());
        assert!(ns.resolve("public:has space").is_none());
        assert!(ns.resolve("public:{tag}").is_none());
        assert!(ns.resolve("news").is_none());
        assert!(ns.resolve(&format!("public:{}", "a".repeat(101))).is_none());
    }
}

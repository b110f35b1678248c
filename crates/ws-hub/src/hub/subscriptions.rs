//! What each connection subscribed to: topics within the declared
//! namespaces, and each subscription's place in its topic's history (held
//! back while it recovers, told to resubscribe when it lost a message).

use super::{ConnId, Hub, read, user_topic, write};
use crate::namespaces::Namespace;
use bytestring::ByteString;
use ports::{HistoryOptions, StreamPosition};
use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;

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

impl Hub {
    /// Joins `topic`; false if the connection is at its topic limit. A
    /// `recovering` subscription holds live messages back until
    /// [`Hub::go_live`].
    pub(crate) fn subscribe(&self, id: ConnId, topic: &str, recovering: bool) -> bool {
        let mut reg = write(&self.inner.registry);
        let max = self.inner.settings.max_topics;
        let Some(conn) = reg.conns.get_mut(&id) else {
            return false;
        };
        let own = topic == user_topic(conn.uid.as_str());
        if !own {
            if !conn.topics.contains(topic) && conn.topics.len() >= max {
                return false;
            }
            conn.topics.insert(topic.to_owned());
        }
        let sub = reg
            .by_topic
            .entry(topic.to_owned())
            .or_default()
            .entry(id)
            .or_default();
        *sub = Sub::default();
        if recovering {
            sub.pending = Some(Vec::new());
        }
        true
    }

    /// Leaves `topic`; true if the connection was in its presence set.
    pub(crate) fn unsubscribe(&self, id: ConnId, topic: &str) -> bool {
        let mut reg = write(&self.inner.registry);
        let mut was_present = false;
        if let Some(conn) = reg.conns.get_mut(&id) {
            conn.topics.remove(topic);
            let before = conn.present_in.len();
            conn.present_in.retain(|t| t != topic);
            was_present = conn.present_in.len() != before;
        }
        if let Some(set) = reg.by_topic.get_mut(topic) {
            set.remove(&id);
            if set.is_empty() {
                reg.by_topic.remove(topic);
            }
        }
        was_present
    }

    /// A subscription that lost messages: it ends (leaving the presence set
    /// as an unsubscribe would) and the client is told to resubscribe.
    pub(super) fn lost(&self, id: ConnId, topic: &str) {
        let uid = read(&self.inner.registry)
            .conns
            .get(&id)
            .map(|c| c.uid.clone());
        if self.unsubscribe(id, topic)
            && let Some(uid) = uid
        {
            self.left(id, &uid, topic.to_owned());
        }
        self.tell_to_resubscribe(id, topic);
    }

    /// Ends a recovery: the subscription has been sent everything up to
    /// `position` (its `subscribed` reply and what it missed); the live
    /// messages held meanwhile that come after it follow, then it is live.
    /// With no position (the history could not be read) every held message
    /// follows and the offsets are taken as they come.
    pub(crate) fn go_live(&self, id: ConnId, topic: &str, position: Option<&StreamPosition>) {
        let mut reg = write(&self.inner.registry);
        let Some(tx) = reg.conns.get(&id).map(|c| c.tx.clone()) else {
            return;
        };
        let Some(sub) = reg.by_topic.get_mut(topic).and_then(|s| s.get_mut(&id)) else {
            return;
        };
        let pending = sub.pending.take().unwrap_or_default();
        if let Some(p) = position {
            sub.seen(p);
        }
        let mut resync = false;
        for (p, text) in pending {
            match sub.admit(&p) {
                Admit::Deliver => {
                    if tx.try_send(text).is_err() {
                        resync = true;
                        break;
                    }
                }
                Admit::Duplicate => {}
                Admit::Gap => {
                    resync = true;
                    break;
                }
            }
        }
        if resync {
            drop(reg);
            self.lost(id, topic);
        }
    }

    /// The declared namespace of `topic` and the name within it.
    pub(crate) fn namespace_of<'t>(&self, topic: &'t str) -> Option<(Namespace, &'t str)> {
        self.inner.namespaces.resolve(topic)
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

    /// Tells a connection its subscription to `topic` lost messages (or
    /// could not hold them while recovering): it was dropped, and the client
    /// subscribes again with `since` to recover.
    pub(super) fn tell_to_resubscribe(&self, id: ConnId, topic: &str) {
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
        self.send_to(id, ByteString::from(text));
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
}

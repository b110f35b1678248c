//! Who is connected: each connection's queue, topics and kick, by id, by
//! user and by topic.

use super::subscriptions::Sub;
use super::{ConnId, Hub, read, user_topic, write};
use crate::send_queue::{self, SendQueue};
use domain::FirebaseUid;
use ports::{Audience, Disconnect};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use tokio_util::sync::CancellationToken;

pub(super) struct Conn {
    pub(super) uid: FirebaseUid,
    pub(super) tx: Arc<SendQueue>,
    /// Topics joined (besides its user's own, joined at once).
    pub(super) topics: HashSet<String>,
    /// Topics where it is in the presence set.
    pub(super) present_in: Vec<String>,
    /// Cancelled when the hub drops the connection (slow client, shutdown,
    /// a disconnect order).
    pub(super) kick: Kick,
}

/// How the hub stops one connection: the token, and the close it should
/// get (set first, when the hub has a reason to give).
#[derive(Clone)]
pub(crate) struct Kick {
    pub(crate) token: CancellationToken,
    pub(crate) reason: Arc<OnceLock<Disconnect>>,
}

impl Kick {
    pub(super) fn with(&self, reason: &Disconnect) {
        let _ = self.reason.set(reason.clone());
        self.token.cancel();
    }
}

#[derive(Default)]
pub(super) struct Registry {
    pub(super) conns: HashMap<ConnId, Conn>,
    pub(super) by_user: HashMap<FirebaseUid, HashSet<ConnId>>,
    pub(super) by_topic: HashMap<String, HashMap<ConnId, Sub>>,
}

impl Hub {
    /// Adds a connection of `uid`; `None` if the user already holds
    /// `max_connections_per_user` sockets here.
    pub(crate) fn register(
        &self,
        uid: FirebaseUid,
    ) -> Option<(ConnId, send_queue::Receiver, Kick)> {
        let mut reg = write(&self.inner.registry);
        let held = reg.by_user.get(&uid).map_or(0, HashSet::len);
        let max = self.inner.settings.max_connections_per_user;
        if max > 0 && held >= max {
            return None;
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = send_queue::channel(
            self.inner.settings.outbound_queue,
            self.inner.settings.outbound_bytes,
        );
        let kick = Kick {
            token: self.inner.shutdown.child_token(),
            reason: Arc::new(OnceLock::new()),
        };
        reg.by_user.entry(uid.clone()).or_default().insert(id);
        reg.by_topic
            .entry(user_topic(uid.as_str()))
            .or_default()
            .insert(id, Sub::default());
        self.count_socket(&uid, true);
        reg.conns.insert(
            id,
            Conn {
                uid,
                tx,
                topics: HashSet::new(),
                present_in: Vec::new(),
                kick: kick.clone(),
            },
        );
        metrics::gauge!("ws_connections").set(reg.conns.len() as f64);
        Some((id, rx, kick))
    }

    pub(crate) fn unregister(&self, id: ConnId) {
        let mut reg = write(&self.inner.registry);
        let Some(conn) = reg.conns.remove(&id) else {
            return;
        };
        self.count_socket(&conn.uid, false);
        if let Some(set) = reg.by_user.get_mut(&conn.uid) {
            set.remove(&id);
            if set.is_empty() {
                reg.by_user.remove(&conn.uid);
            }
        }
        let own = user_topic(conn.uid.as_str());
        for topic in conn.topics.iter().chain(std::iter::once(&own)) {
            if let Some(set) = reg.by_topic.get_mut(topic) {
                set.remove(&id);
                if set.is_empty() {
                    reg.by_topic.remove(topic);
                }
            }
        }
        metrics::gauge!("ws_connections").set(reg.conns.len() as f64);
        drop(reg);
        for topic in conn.present_in {
            self.left(id, &conn.uid, topic);
        }
    }

    /// How many sockets this instance holds for `uid`.
    pub(crate) fn local_sockets(&self, uid: &FirebaseUid) -> usize {
        read(&self.inner.registry)
            .by_user
            .get(uid)
            .map_or(0, HashSet::len)
    }

    /// How many connections here are subscribed to `topic`.
    #[cfg(test)]
    pub(crate) fn local_sockets_in(&self, topic: &str) -> usize {
        read(&self.inner.registry)
            .by_topic
            .get(topic)
            .map_or(0, HashMap::len)
    }

    pub fn connection_count(&self) -> usize {
        read(&self.inner.registry).conns.len()
    }

    /// The connections an audience covers, right now.
    pub(super) fn targets(&self, audience: &Audience) -> Vec<ConnId> {
        let reg = read(&self.inner.registry);
        match audience {
            Audience::User(uid) => reg
                .by_user
                .get(uid)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default(),
            Audience::Topic(t) => reg
                .by_topic
                .get(t)
                .map(|s| s.keys().copied().collect())
                .unwrap_or_default(),
            Audience::Everyone => reg.conns.keys().copied().collect(),
        }
    }

    fn count_socket(&self, uid: &FirebaseUid, opened: bool) {
        if let Some((_, tx)) = &self.inner.socket_counts
            && tx.try_send((uid.as_str().to_owned(), opened)).is_err()
        {
            tracing::debug!("socket count dropped (the counter is behind)");
        }
    }
}

//! Presence: which connections are in which topics' presence sets, kept
//! in the presence store (refreshed while they stay, removed when they
//! leave), with `join` / `leave` notices where the namespace asks for them.

use super::{ConnId, Hub, read, write};
use domain::FirebaseUid;
use ports::{Audience, Notification, PresenceEntry};
use std::sync::Arc;
use std::time::Duration;

impl Hub {
    /// The presence id of a connection: `<instance>/<connection>`.
    fn client_id(&self, id: ConnId) -> String {
        format!("{}/{id}", self.settings().instance_id)
    }

    /// A connection joined `topic` in a namespace with presence: its entry is
    /// added (and refreshed until it leaves) and, with `join_leave`, the
    /// topic is told.
    pub(crate) async fn joined(
        &self,
        id: ConnId,
        uid: &FirebaseUid,
        topic: &str,
        join_leave: bool,
    ) {
        let Some(store) = self.presence_store().cloned() else {
            return;
        };
        if !self.mark_present(id, topic) {
            return;
        }
        let client = self.client_id(id);
        let entry = PresenceEntry {
            client: client.clone(),
            uid: uid.as_str().to_owned(),
        };
        let ttl = self.settings().presence_ttl;
        if let Err(e) = store.join(&[(topic.to_owned(), entry)], ttl).await {
            tracing::warn!(error = %e, "presence entry not added yet (the next refresh retries)");
        }
        if join_leave {
            self.presence_notice("join", topic, &client, uid.as_str())
                .await;
        }
    }

    /// A connection left `topic`'s presence set: removes its entry and, where
    /// the namespace says so, tells the topic.
    pub(crate) fn left(&self, id: ConnId, uid: &FirebaseUid, topic: String) {
        let Some(store) = self.presence_store().cloned() else {
            return;
        };
        let join_leave = self
            .namespace_of(&topic)
            .is_some_and(|(ns, _)| ns.options.join_leave);
        let client = self.client_id(id);
        let hub = self.clone();
        let uid = uid.as_str().to_owned();
        tokio::spawn(async move {
            if let Err(e) = store.leave(&topic, &client).await {
                tracing::debug!(error = %e, "presence leave not recorded (the entry expires)");
            }
            if join_leave {
                hub.presence_notice("leave", &topic, &client, &uid).await;
            }
        });
    }

    /// `join` / `leave` to a topic's subscribers, here and on the other
    /// instances.
    async fn presence_notice(&self, kind: &str, topic: &str, client: &str, uid: &str) {
        let notice = Notification::new(kind, serde_json::json!({"client": client, "uid": uid}));
        self.announce(&Audience::Topic(topic.to_owned()), notice)
            .await;
    }

    /// Records that the connection is in `topic`'s presence set (refreshed
    /// until it leaves); false if it is gone or already there.
    pub(crate) fn mark_present(&self, id: ConnId, topic: &str) -> bool {
        let mut reg = write(&self.inner.registry);
        match reg.conns.get_mut(&id) {
            Some(conn) if !conn.present_in.iter().any(|t| t == topic) => {
                conn.present_in.push(topic.to_owned());
                true
            }
            _ => false,
        }
    }

    /// Every (topic, connection, uid) in a presence set on this instance.
    pub(crate) fn present(&self) -> Vec<(String, ConnId, String)> {
        let reg = read(&self.inner.registry);
        reg.conns
            .iter()
            .flat_map(|(id, c)| {
                c.present_in
                    .iter()
                    .map(move |t| (t.clone(), *id, c.uid.as_str().to_owned()))
            })
            .collect()
    }
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
            () = hub.shutdown_token().cancelled() => return,
        }
        let entries: Vec<(String, PresenceEntry)> = hub
            .present()
            .into_iter()
            .map(|(topic, id, uid)| {
                (
                    topic,
                    PresenceEntry {
                        client: hub.client_id(id),
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

//! An in-process fan-out with topic history, and an in-memory presence
//! store: what a single instance needs, with the same contracts as Redis.

use async_trait::async_trait;
use ports::realtime::{
    Audience, Fanout, FanoutError, FanoutMessage, FanoutSink, HistoryOptions, HistoryRead,
    PresenceEntry, PresenceStore, Publication, StreamPosition, TopicHistory,
};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Topic {
    epoch: String,
    offset: u64,
    entries: VecDeque<Publication>,
    history_until: Instant,
    meta_until: Instant,
}

/// Delivers every published message to every subscribed sink, in order;
/// keeps topics' histories in memory with their expiry.
#[derive(Default)]
pub struct InMemoryFanout {
    sinks: Mutex<Vec<(Arc<dyn FanoutSink>, CancellationToken)>>,
    topics: Mutex<HashMap<String, Topic>>,
    epochs: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for InMemoryFanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryFanout").finish_non_exhaustive()
    }
}

impl InMemoryFanout {
    pub fn new() -> Self {
        Self::default()
    }

    fn send(&self, message: &FanoutMessage) {
        let mut sinks = lock(&self.sinks);
        sinks.retain(|(_, stop)| !stop.is_cancelled());
        for (sink, _) in sinks.iter() {
            sink.deliver(message.clone());
        }
    }

    /// The topic's live state (a new epoch if its metadata expired).
    fn topic<'a>(&self, topics: &'a mut HashMap<String, Topic>, name: &str) -> &'a mut Topic {
        let now = Instant::now();
        if topics.get(name).is_some_and(|t| t.meta_until <= now) {
            topics.remove(name);
        }
        let topic = topics.entry(name.to_owned()).or_insert_with(|| Topic {
            epoch: format!(
                "m{}",
                self.epochs
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
            offset: 0,
            entries: VecDeque::new(),
            history_until: now,
            meta_until: now,
        });
        if topic.history_until <= now {
            topic.entries.clear();
        }
        topic
    }
}

#[async_trait]
impl Fanout for InMemoryFanout {
    async fn publish(&self, message: &FanoutMessage) -> Result<(), FanoutError> {
        self.send(message);
        Ok(())
    }

    async fn subscribe(
        &self,
        sink: Arc<dyn FanoutSink>,
        stop: CancellationToken,
    ) -> Result<(), FanoutError> {
        lock(&self.sinks).push((sink, stop));
        Ok(())
    }
}

#[async_trait]
impl TopicHistory for InMemoryFanout {
    async fn forget(&self, topic: &str) -> Result<(), FanoutError> {
        lock(&self.topics).remove(topic);
        Ok(())
    }

    async fn publish_recorded(
        &self,
        topic: &str,
        message: &FanoutMessage,
        history: &HistoryOptions,
    ) -> Result<StreamPosition, FanoutError> {
        let mut topics = lock(&self.topics);
        let t = self.topic(&mut topics, topic);
        t.offset += 1;
        t.entries.push_back(Publication {
            offset: t.offset,
            notification: message.notification.clone(),
        });
        while t.entries.len() > history.size.max(1) {
            t.entries.pop_front();
        }
        let now = Instant::now();
        t.history_until = now + history.ttl;
        t.meta_until = now + history.meta_ttl();
        let position = StreamPosition {
            offset: t.offset,
            epoch: t.epoch.clone(),
        };
        let mut recorded = message.clone();
        recorded.position = Some(position.clone());
        // Sent under the lock: subscribers see a topic's offsets in order.
        self.send(&recorded);
        Ok(position)
    }

    async fn history(
        &self,
        topic: &str,
        since: Option<&StreamPosition>,
        history: &HistoryOptions,
    ) -> Result<HistoryRead, FanoutError> {
        let mut topics = lock(&self.topics);
        let t = self.topic(&mut topics, topic);
        t.meta_until = Instant::now() + history.meta_ttl();
        let position = StreamPosition {
            offset: t.offset,
            epoch: t.epoch.clone(),
        };
        let Some(since) = since else {
            return Ok(HistoryRead {
                position,
                publications: Vec::new(),
                recovered: false,
            });
        };
        let after: Vec<Publication> = t
            .entries
            .iter()
            .filter(|p| p.offset > since.offset)
            .cloned()
            .collect();
        let recovered = since.epoch == position.epoch
            && since.offset <= position.offset
            && after.len() as u64 == position.offset - since.offset;
        Ok(HistoryRead {
            position,
            publications: if recovered { after } else { Vec::new() },
            recovered,
        })
    }
}

/// A topic's clients: uid and expiry per client.
type Clients = HashMap<String, (String, Instant)>;

/// Presence entries in memory, expiring like Redis's.
#[derive(Debug, Default)]
pub struct InMemoryPresence {
    entries: Mutex<HashMap<String, Clients>>,
}

impl InMemoryPresence {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl PresenceStore for InMemoryPresence {
    async fn join(
        &self,
        entries: &[(String, PresenceEntry)],
        ttl: Duration,
    ) -> Result<(), FanoutError> {
        let until = Instant::now() + ttl;
        let mut all = lock(&self.entries);
        for (topic, e) in entries {
            all.entry(topic.clone())
                .or_default()
                .insert(e.client.clone(), (e.uid.clone(), until));
        }
        Ok(())
    }

    async fn leave(&self, topic: &str, client: &str) -> Result<(), FanoutError> {
        if let Some(t) = lock(&self.entries).get_mut(topic) {
            t.remove(client);
        }
        Ok(())
    }

    async fn present(&self, topic: &str) -> Result<Vec<PresenceEntry>, FanoutError> {
        let now = Instant::now();
        let mut all = lock(&self.entries);
        let Some(t) = all.get_mut(topic) else {
            return Ok(Vec::new());
        };
        t.retain(|_, (_, until)| *until > now);
        let mut out: Vec<PresenceEntry> = t
            .iter()
            .map(|(client, (uid, _))| PresenceEntry {
                client: client.clone(),
                uid: uid.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.client.cmp(&b.client));
        Ok(out)
    }
}

/// A recorded message for `topic` (the contract suites' helper).
pub fn topic_message(topic: &str, kind: &str, n: u64) -> FanoutMessage {
    FanoutMessage {
        origin: "contract".into(),
        audience: Audience::Topic(topic.into()),
        notification: ports::realtime::Notification::new(kind, serde_json::json!({"n": n})),
        disconnect: None,
        position: None,
        acked: None,
    }
}

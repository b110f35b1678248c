//! A push sender that records what it sends and plays a provider's answers.

use super::contract::push::PushProviderHarness;
use async_trait::async_trait;
use domain::PushToken;
use ports::push::{PushMessage, PushSender, SendPushError};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A scripted answer for one send to one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    Deliver,
    Unregistered,
    InvalidToken,
    Unavailable { retry_after: Option<Duration> },
    Rejected { code: String },
}

#[derive(Debug, Default)]
struct State {
    sent: Vec<(PushToken, PushMessage)>,
    unregistered: HashSet<PushToken>,
    scripts: HashMap<PushToken, VecDeque<PushOutcome>>,
    outage: Option<Duration>,
    attempts: usize,
}

/// Records delivered messages; tokens can be unregistered, answers scripted
/// per token, and the whole provider taken down.
#[derive(Debug, Default)]
pub struct RecordingPushSender {
    state: Mutex<State>,
}

impl RecordingPushSender {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues answers for the next sends to `token` (then it is delivered).
    pub fn script(&self, token: &PushToken, outcomes: impl IntoIterator<Item = PushOutcome>) {
        lock(&self.state)
            .scripts
            .entry(token.clone())
            .or_default()
            .extend(outcomes);
    }

    /// Every delivered message, in order.
    pub fn sent(&self) -> Vec<(PushToken, PushMessage)> {
        lock(&self.state).sent.clone()
    }

    /// Sends attempted, delivered or not (oversize messages are not attempts).
    pub fn attempts(&self) -> usize {
        lock(&self.state).attempts
    }
}

#[async_trait]
impl PushSender for RecordingPushSender {
    async fn send(&self, token: &PushToken, message: &PushMessage) -> Result<(), SendPushError> {
        message.check_size()?;
        let mut s = lock(&self.state);
        s.attempts += 1;
        if let Some(retry_after) = s.outage {
            return Err(SendPushError::Unavailable {
                reason: "provider down".into(),
                retry_after: Some(retry_after),
            });
        }
        let scripted = s.scripts.get_mut(token).and_then(VecDeque::pop_front);
        let outcome = match scripted {
            Some(o) => o,
            None if s.unregistered.contains(token) => PushOutcome::Unregistered,
            None => PushOutcome::Deliver,
        };
        match outcome {
            PushOutcome::Deliver => {
                s.sent.push((token.clone(), message.clone()));
                Ok(())
            }
            PushOutcome::Unregistered => Err(SendPushError::Unregistered),
            PushOutcome::InvalidToken => Err(SendPushError::InvalidToken),
            PushOutcome::Unavailable { retry_after } => Err(SendPushError::Unavailable {
                reason: "scripted".into(),
                retry_after,
            }),
            PushOutcome::Rejected { code } => Err(SendPushError::Rejected { code }),
        }
    }
}

impl PushProviderHarness for RecordingPushSender {
    fn sender(&self) -> &dyn PushSender {
        self
    }

    fn unregister(&self, token: &PushToken) {
        lock(&self.state).unregistered.insert(token.clone());
    }

    fn begin_outage(&self, retry_after: Duration) {
        lock(&self.state).outage = Some(retry_after);
    }

    fn end_outage(&self) {
        lock(&self.state).outage = None;
    }

    fn delivered(&self) -> Vec<PushToken> {
        lock(&self.state)
            .sent
            .iter()
            .map(|(t, _)| t.clone())
            .collect()
    }
}

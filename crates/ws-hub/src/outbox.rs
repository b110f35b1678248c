//! A connection's outbound queue: bounded, many senders, one receiver.
//!
//! Unlike `tokio::sync::mpsc`, which allocates a block of 32 slots per
//! channel up front, it holds nothing until a message waits, and gives the
//! room back once drained: an idle socket costs its queue a few words.

use bytestring::ByteString;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Messages a drained queue may keep room for; more is given back.
const KEEP_ROOM: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TrySendError {
    Full,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

#[derive(Default)]
struct State {
    queue: VecDeque<ByteString>,
    closed: bool,
}

pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Wakes the receiver (one; a wake-up before it waits is kept).
    readable: Notify,
    /// Wakes senders waiting for room.
    writable: Notify,
    capacity: usize,
}

/// The receiving end; dropping it closes the queue.
pub(crate) struct Receiver(Arc<Outbox>);

impl Drop for Receiver {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A queue of `capacity` messages: its sending side (cheap to clone) and
/// its receiver.
pub(crate) fn channel(capacity: usize) -> (Arc<Outbox>, Receiver) {
    let outbox = Arc::new(Outbox {
        state: Mutex::default(),
        readable: Notify::new(),
        writable: Notify::new(),
        capacity: capacity.max(1),
    });
    (outbox.clone(), Receiver(outbox))
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `text` now, or gives it back with why not.
    pub(crate) fn try_send(&self, text: ByteString) -> Result<(), (TrySendError, ByteString)> {
        let mut state = self.lock();
        if state.closed {
            return Err((TrySendError::Closed, text));
        }
        if state.queue.len() >= self.capacity {
            return Err((TrySendError::Full, text));
        }
        state.queue.push_back(text);
        drop(state);
        self.readable.notify_one();
        Ok(())
    }

    /// Queues `text`, waiting for room.
    pub(crate) async fn send(&self, mut text: ByteString) -> Result<(), Closed> {
        loop {
            let room = self.writable.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_send(text) {
                Ok(()) => return Ok(()),
                Err((TrySendError::Closed, _)) => return Err(Closed),
                Err((TrySendError::Full, back)) => text = back,
            }
            room.await;
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.readable.notify_one();
        self.writable.notify_waiters();
    }
}

impl Receiver {
    /// The next message, if one is queued.
    pub(crate) fn try_recv(&mut self) -> Option<ByteString> {
        let mut state = self.0.lock();
        let text = state.queue.pop_front()?;
        if state.queue.is_empty() && state.queue.capacity() > KEEP_ROOM {
            state.queue = VecDeque::new();
        }
        drop(state);
        self.0.writable.notify_waiters();
        Some(text)
    }

    /// The next message; `None` once the queue is closed and drained.
    pub(crate) async fn recv(&mut self) -> Option<ByteString> {
        loop {
            if let Some(text) = self.try_recv() {
                return Some(text);
            }
            if self.0.lock().closed {
                return None;
            }
            self.0.readable.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> ByteString {
        ByteString::from(s.to_owned())
    }

    #[tokio::test]
    async fn it_holds_up_to_its_capacity_in_order_and_closes_with_its_receiver() {
        let (tx, mut rx) = channel(2);
        assert!(tx.try_send(text("a")).is_ok());
        assert!(tx.try_send(text("b")).is_ok());
        assert_eq!(tx.try_send(text("c")).unwrap_err().0, TrySendError::Full);
        assert_eq!(rx.recv().await.as_deref(), Some("a"));
        assert!(tx.try_send(text("c")).is_ok());
        assert_eq!(rx.try_recv().as_deref(), Some("b"));
        assert_eq!(rx.try_recv().as_deref(), Some("c"));
        assert_eq!(rx.try_recv(), None);
        drop(rx);
        assert_eq!(tx.try_send(text("d")).unwrap_err().0, TrySendError::Closed);
        assert_eq!(tx.send(text("d")).await, Err(Closed));
    }

    #[tokio::test]
    async fn a_sender_waits_for_room_and_the_receiver_for_a_message() {
        let (tx, mut rx) = channel(1);
        tx.try_send(text("first")).unwrap();
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(text("second")).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(rx.recv().await.as_deref(), Some("first"));
        waiting.await.unwrap().unwrap();
        assert_eq!(rx.recv().await.as_deref(), Some("second"));
        let reader = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.try_send(text("third")).unwrap();
        assert_eq!(reader.await.unwrap().as_deref(), Some("third"));
    }

    #[test]
    fn a_drained_queue_gives_its_room_back() {
        let (tx, mut rx) = channel(1000);
        for i in 0..500 {
            tx.try_send(text(&i.to_string())).unwrap();
        }
        while rx.try_recv().is_some() {}
        assert_eq!(rx.0.lock().queue.capacity(), 0);
    }
}

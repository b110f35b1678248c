//! A connection's outbound queue: bounded in messages and in bytes, many
//! senders, one receiver.
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
    /// The bytes of the messages in `queue`.
    bytes: usize,
    closed: bool,
}

pub(crate) struct SendQueue {
    state: Mutex<State>,
    /// Wakes the receiver (one; a wake-up before it waits is kept).
    readable: Notify,
    /// Wakes senders waiting for room.
    writable: Notify,
    capacity: usize,
    /// The most bytes queued at once; one message is always let in when
    /// the queue is empty, however big (it is bounded by the hub's
    /// largest message), so a queue never refuses a message forever.
    max_bytes: usize,
}

/// The receiving end; dropping it closes the queue.
pub(crate) struct Receiver(Arc<SendQueue>);

impl Drop for Receiver {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A queue of `capacity` messages and `max_bytes` bytes: its sending side
/// (cheap to clone) and its receiver.
pub(crate) fn channel(capacity: usize, max_bytes: usize) -> (Arc<SendQueue>, Receiver) {
    let queue = Arc::new(SendQueue {
        state: Mutex::default(),
        readable: Notify::new(),
        writable: Notify::new(),
        capacity: capacity.max(1),
        max_bytes: max_bytes.max(1),
    });
    (queue.clone(), Receiver(queue))
}

impl SendQueue {
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
        let over_bytes =
            !state.queue.is_empty() && state.bytes.saturating_add(text.len()) > self.max_bytes;
        if state.queue.len() >= self.capacity || over_bytes {
            return Err((TrySendError::Full, text));
        }
        state.bytes += text.len();
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
        state.bytes -= text.len();
        if state.queue.is_empty() && state.queue.capacity() > KEEP_ROOM {
            state.queue = VecDeque::new();
        }
        drop(state);
        self.0.writable.notify_waiters();
        Some(text)
    }

    /// Puts `text`, just taken and not sent, back at the head of the queue
    /// (its room was taken when it was queued).
    pub(crate) fn put_back(&mut self, text: ByteString) {
        let mut state = self.0.lock();
        state.bytes += text.len();
        state.queue.push_front(text);
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

    #[test]
    fn a_message_put_back_comes_out_first_and_keeps_its_room() {
        let (tx, mut rx) = channel(2, 1024);
        assert!(tx.try_send(text("notice")).is_ok());
        assert!(tx.try_send(text("later")).is_ok());
        let taken = rx.try_recv().unwrap();
        rx.put_back(taken);
        // Still two queued: no room for a third.
        assert_eq!(tx.try_send(text("more")).unwrap_err().0, TrySendError::Full);
        assert_eq!(rx.try_recv().as_deref(), Some("notice"));
        assert_eq!(rx.try_recv().as_deref(), Some("later"));
        assert_eq!(rx.try_recv(), None);
    }

    #[tokio::test]
    async fn it_holds_up_to_its_capacity_in_order_and_closes_with_its_receiver() {
        let (tx, mut rx) = channel(2, 1024);
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
        let (tx, mut rx) = channel(1, 1024);
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

    #[tokio::test]
    async fn it_holds_no_more_bytes_than_its_budget_but_always_one_message() {
        let (tx, mut rx) = channel(100, 10);
        let big = text(&"x".repeat(64));
        assert!(tx.try_send(big.clone()).is_ok(), "an empty queue takes one");
        assert_eq!(tx.try_send(text("y")).unwrap_err().0, TrySendError::Full);
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(text("12345")).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "waits for bytes to leave");
        assert_eq!(rx.recv().await, Some(big));
        waiting.await.unwrap().unwrap();
        assert!(tx.try_send(text("67890")).is_ok(), "10 bytes fit in 10");
        assert_eq!(tx.try_send(text("!")).unwrap_err().0, TrySendError::Full);
        assert_eq!(rx.0.lock().bytes, 10);
        while rx.try_recv().is_some() {}
        assert_eq!(rx.0.lock().bytes, 0);
    }

    #[test]
    fn a_drained_queue_gives_its_room_back() {
        let (tx, mut rx) = channel(1000, 1 << 20);
        for i in 0..500 {
            tx.try_send(text(&i.to_string())).unwrap();
        }
        while rx.try_recv().is_some() {}
        assert_eq!(rx.0.lock().queue.capacity(), 0);
    }
}

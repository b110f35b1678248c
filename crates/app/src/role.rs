//! Which parts of the system a process runs.

/// Which parts of the system this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// HTTP and WebSocket.
    Serve,
    /// Queue workers, stream consumers, the outbox relay (and the
    /// operational routes `/healthz`, `/readyz`, `/metrics`).
    Worker,
    /// Both (the local default).
    All,
}

impl Role {
    pub(crate) fn serves(self) -> bool {
        matches!(self, Role::Serve | Role::All)
    }

    pub(crate) fn works(self) -> bool {
        matches!(self, Role::Worker | Role::All)
    }
}

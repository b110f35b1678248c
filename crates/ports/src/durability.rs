//! When a Redis write counts as done: acknowledged by the primary alone, or
//! by its replicas too.
//!
//! Redis replicates asynchronously: a write the primary acknowledged can
//! vanish with it in a failover. The writes whose loss would break a promise
//! (an event the relay then marks published, an enqueued job, the removal of
//! a finished job) are followed by `WAIT`, so they count as done only once a
//! replica holds them too. The adapters that make those writes take a
//! `ReplicaWait`.

use std::time::Duration;

/// How many replicas a write waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplicaAcks {
    /// Never wait (no replicas, or the risk is accepted).
    Off,
    /// Wait for one replica whenever the primary has one connected; with
    /// none connected (a lone Redis, or a primary whose replicas are gone),
    /// the write does not wait.
    #[default]
    Auto,
    /// Wait for this many replicas, whether or not they are connected: a
    /// write fewer of them acknowledge in time fails (its outcome unknown,
    /// so the caller retries, which at-least-once delivery allows).
    AtLeast(u32),
}

impl ReplicaAcks {
    /// `auto`, `off` (or `0`), or a number of replicas.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "off" | "0" => Ok(Self::Off),
            n => n
                .parse::<u32>()
                .map(Self::AtLeast)
                .map_err(|_| format!("expected auto, off or a number of replicas, got {s:?}")),
        }
    }
}

/// The replica acknowledgements a write waits for, and how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaWait {
    pub acks: ReplicaAcks,
    /// Longest wait for them (`WAIT`'s timeout); past it the write fails.
    pub timeout: Duration,
}

impl Default for ReplicaWait {
    fn default() -> Self {
        Self {
            acks: ReplicaAcks::Auto,
            timeout: Duration::from_millis(1000),
        }
    }
}

impl ReplicaWait {
    /// Never waits.
    pub const OFF: Self = Self {
        acks: ReplicaAcks::Off,
        timeout: Duration::ZERO,
    };

    /// How many replicas to wait for when the primary has `connected`
    /// replicas (from its `INFO replication`). 0: do not wait.
    pub fn required(&self, connected: u32) -> u32 {
        match self.acks {
            ReplicaAcks::Off => 0,
            ReplicaAcks::Auto => connected.min(1),
            ReplicaAcks::AtLeast(n) => n,
        }
    }

    /// `WAIT`'s timeout argument, in milliseconds (at least 1: 0 would
    /// wait forever).
    pub fn timeout_ms(&self) -> u64 {
        u64::try_from(self.timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Whether the replica count is worth asking for at all.
    pub fn is_off(&self) -> bool {
        matches!(self.acks, ReplicaAcks::Off)
    }
}

/// `connected_slaves` from `INFO replication`: how many replicas the
/// server has connected (0 for a replica or a server without any).
pub fn connected_replicas(info: &str) -> Option<u32> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix("connected_slaves:"))
        .and_then(|n| n.trim().parse().ok())
}

/// The replica count an adapter last read from its primary, and when:
/// read again after `REFRESH`, after a shortfall and after a reconnect
/// (`forget`), so a failover's new primary is asked, not remembered.
#[derive(Debug, Default)]
pub struct KnownReplicas {
    last: std::sync::Mutex<Option<(u32, std::time::Instant)>>,
}

impl KnownReplicas {
    /// How long a count is trusted.
    pub const REFRESH: Duration = Duration::from_secs(10);

    /// The count, if it was read within `REFRESH`.
    pub fn fresh(&self) -> Option<u32> {
        let last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        last.and_then(|(n, at)| (at.elapsed() < Self::REFRESH).then_some(n))
    }

    pub fn set(&self, connected: u32) {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((connected, std::time::Instant::now()));
    }

    pub fn forget(&self) {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

/// A write that was not acknowledged by enough replicas in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the write reached {acked} of the {required} replica(s) it waits for within {timeout:?}")]
pub struct ReplicaShortfall {
    pub acked: u32,
    pub required: u32,
    pub timeout: Duration,
}

/// Checks `WAIT`'s reply.
pub fn check_acks(wait: &ReplicaWait, required: u32, acked: u32) -> Result<(), ReplicaShortfall> {
    if acked >= required {
        Ok(())
    } else {
        Err(ReplicaShortfall {
            acked,
            required,
            timeout: wait.timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_parse_and_decide_how_many_replicas_to_wait_for() {
        assert_eq!(ReplicaAcks::parse("auto"), Ok(ReplicaAcks::Auto));
        assert_eq!(ReplicaAcks::parse("OFF"), Ok(ReplicaAcks::Off));
        assert_eq!(ReplicaAcks::parse("0"), Ok(ReplicaAcks::Off));
        assert_eq!(ReplicaAcks::parse("2"), Ok(ReplicaAcks::AtLeast(2)));
        assert!(ReplicaAcks::parse("some").is_err());
        let auto = ReplicaWait::default();
        assert_eq!(
            (auto.required(0), auto.required(1), auto.required(3)),
            (0, 1, 1)
        );
        let two = ReplicaWait {
            acks: ReplicaAcks::AtLeast(2),
            ..auto
        };
        assert_eq!((two.required(0), two.required(5)), (2, 2));
        assert_eq!(ReplicaWait::OFF.required(4), 0);
        assert_eq!(ReplicaWait::OFF.timeout_ms(), 1);
        assert!(check_acks(&two, 2, 1).is_err());
        assert!(check_acks(&two, 2, 2).is_ok());
    }

    #[test]
    fn the_replica_count_comes_from_info_replication() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=127.0.0.1\r\n";
        assert_eq!(connected_replicas(info), Some(2));
        assert_eq!(connected_replicas("role:slave\r\n"), None);
    }
}

//! The WebSocket hub.

use super::reader::Reader;
use std::time::Duration;

pub(crate) const VARIABLES: &[&str] = &[
    "WS_MAX_MESSAGE_BYTES",
    "WS_OUTBOUND_QUEUE",
    "WS_OUTBOUND_BYTES",
    "WS_PING_INTERVAL_SECS",
    "WS_IDLE_TIMEOUT_SECS",
    "WS_HANDLER_CONCURRENCY",
    "WS_MAX_CONNECTIONS_PER_USER",
    "WS_USER_HISTORY_SIZE",
    "WS_USER_HISTORY_TTL_SECS",
    "WS_PUBLIC_HISTORY_SIZE",
    "WS_PUBLIC_HISTORY_TTL_SECS",
    "WS_PRESENCE_TTL_SECS",
    "WS_ACK_WAIT_SECS",
];

#[derive(Debug, Clone)]
pub struct WsSection {
    pub max_message_bytes: usize,
    pub outbound_queue: usize,
    /// Bytes queued for one socket (a client that sends and never reads
    /// stops being read once its replies fill it).
    pub outbound_bytes: usize,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub handler_concurrency: usize,
    /// Sockets one user may hold on one instance; 0: no limit.
    pub max_connections_per_user: usize,
    /// Messages kept of each user's own topic (`user:<uid>`) for recovery;
    /// 0: no history.
    pub user_history_size: usize,
    pub user_history_ttl: Duration,
    /// Messages kept of each `public:<name>` topic; 0: no history.
    pub public_history_size: usize,
    pub public_history_ttl: Duration,
    /// How long presence entries live without a refresh (the bound on a
    /// dead instance's ghosts).
    pub presence_ttl: Duration,
    /// How long a socket has to acknowledge a delivery before it goes out
    /// as a push notification instead.
    pub ack_wait: Duration,
}

impl WsSection {
    pub(crate) fn read(r: &mut Reader<'_>) -> Self {
        let max_message_bytes = r.ranged(
            "WS_MAX_MESSAGE_BYTES",
            64 * 1024_usize,
            1024,
            16 * 1024 * 1024,
            "bytes",
        );
        let outbound_queue = r.ranged("WS_OUTBOUND_QUEUE", 256_usize, 1, 65_536, "messages");
        let outbound_bytes = r.ranged(
            "WS_OUTBOUND_BYTES",
            1024 * 1024_usize,
            1024,
            256 * 1024 * 1024,
            "bytes",
        );
        let ping_interval = r.seconds("WS_PING_INTERVAL_SECS", 15, 1, 3600);
        let idle_timeout = r.seconds("WS_IDLE_TIMEOUT_SECS", 45, 2, 86_400);
        if idle_timeout <= ping_interval {
            r.problem(
                "WS_IDLE_TIMEOUT_SECS",
                "must be longer than WS_PING_INTERVAL_SECS (or every socket times out)",
            );
        }
        let handler_concurrency = r.ranged("WS_HANDLER_CONCURRENCY", 64_usize, 1, 65_536, "calls");
        let max_connections_per_user = r.ranged(
            "WS_MAX_CONNECTIONS_PER_USER",
            16_usize,
            0,
            1_000_000,
            "sockets (0: no limit)",
        );
        let user_history_size = r.ranged(
            "WS_USER_HISTORY_SIZE",
            100_usize,
            0,
            10_000,
            "messages (0: none)",
        );
        let user_history_ttl = r.seconds("WS_USER_HISTORY_TTL_SECS", 600, 1, 7 * 86_400);
        let public_history_size = r.ranged(
            "WS_PUBLIC_HISTORY_SIZE",
            0_usize,
            0,
            10_000,
            "messages (0: none)",
        );
        let public_history_ttl = r.seconds("WS_PUBLIC_HISTORY_TTL_SECS", 300, 1, 7 * 86_400);
        let presence_ttl = r.seconds("WS_PRESENCE_TTL_SECS", 30, 3, 3600);
        let ack_wait = r.seconds("WS_ACK_WAIT_SECS", 10, 1, 3600);
        Self {
            user_history_size,
            user_history_ttl,
            public_history_size,
            public_history_ttl,
            presence_ttl,
            ack_wait,
            max_message_bytes,
            outbound_queue,
            outbound_bytes,
            ping_interval,
            idle_timeout,
            handler_concurrency,
            max_connections_per_user,
        }
    }

    /// What `public:<name>` topics keep.
    pub fn public_history(&self) -> Option<ports::HistoryOptions> {
        (self.public_history_size > 0).then_some(ports::HistoryOptions {
            size: self.public_history_size,
            ttl: self.public_history_ttl,
        })
    }

    /// The hub of instance `instance_id`.
    pub fn hub_settings(&self, instance_id: &str) -> ws_hub::HubSettings {
        ws_hub::HubSettings {
            max_message_bytes: self.max_message_bytes,
            outbound_queue: self.outbound_queue,
            outbound_bytes: self.outbound_bytes,
            ping_interval: self.ping_interval,
            idle_timeout: self.idle_timeout,
            handler_concurrency: self.handler_concurrency,
            max_connections_per_user: self.max_connections_per_user,
            user_history: (self.user_history_size > 0).then_some(ports::HistoryOptions {
                size: self.user_history_size,
                ttl: self.user_history_ttl,
            }),
            presence_ttl: self.presence_ttl,
            ..ws_hub::HubSettings::new(instance_id.to_owned())
        }
    }
}

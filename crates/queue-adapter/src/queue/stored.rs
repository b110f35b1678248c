//! How a job is stored: a small hash of the fields the scripts read
//! (`state`, `lease`, `attempt`, `ready_at`, and `max_retries`,
//! `unique_key`, `unique_ttl_ms` when set) plus `body`, everything else in
//! one compact JSON value the scripts never look into.
//!
//! Jobs stored by versions before `body` (every field apart: `kind`,
//! `version`, `payload`, `queue`, `timeout_ms`, ...) are still read: the
//! fields the scripts use kept their names, and [`Body::from_fields`]
//! rebuilds the rest, so work queued before an upgrade runs after it.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// What the scripts never read, stored as one value. Defaults are left
/// out: a small job's whole hash then stays within Redis' compact encoding
/// (a listpack holds values up to 64 bytes; one longer value turns the
/// hash into a table about twice the size).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Body {
    #[serde(rename = "k")]
    pub(crate) kind: String,
    #[serde(
        rename = "v",
        default = "first_version",
        skip_serializing_if = "is_first_version"
    )]
    pub(crate) version: u16,
    #[serde(
        rename = "q",
        default = "default_queue",
        skip_serializing_if = "is_default_queue"
    )]
    pub(crate) queue: String,
    /// The handler's time limit, in ms (0: the worker's default).
    #[serde(
        rename = "t",
        default = "default_timeout_ms",
        skip_serializing_if = "is_default_timeout"
    )]
    pub(crate) timeout_ms: u64,
    #[serde(rename = "p")]
    pub(crate) payload: serde_json::Value,
}

fn default_queue() -> String {
    ports::NewJob::DEFAULT_QUEUE.to_owned()
}

fn is_default_queue(q: &str) -> bool {
    q == ports::NewJob::DEFAULT_QUEUE
}

fn first_version() -> u16 {
    1
}

#[expect(clippy::trivially_copy_pass_by_ref, reason = "serde's signature")]
fn is_first_version(v: &u16) -> bool {
    *v == 1
}

fn default_timeout_ms() -> u64 {
    u64::try_from(ports::NewJob::DEFAULT_TIMEOUT.as_millis()).unwrap_or(u64::MAX)
}

#[expect(clippy::trivially_copy_pass_by_ref, reason = "serde's signature")]
fn is_default_timeout(t: &u64) -> bool {
    *t == default_timeout_ms()
}

impl Body {
    pub(crate) fn encode(&self) -> String {
        // Strings, numbers and a JSON value always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub(crate) fn decode(body: &str) -> Option<Self> {
        serde_json::from_str(body).ok()
    }

    /// The body of a stored job's hash, in either format; `None` when it
    /// has neither (deleted meanwhile, or not a job).
    pub(crate) fn from_fields(fields: &HashMap<String, String>) -> Option<Self> {
        if let Some(body) = fields.get("body") {
            return Self::decode(body);
        }
        let get = |k: &str| fields.get(k).map(String::as_str);
        Some(Self {
            kind: get("kind")?.to_owned(),
            version: get("version").and_then(|v| v.parse().ok()).unwrap_or(1),
            queue: get("queue")?.to_owned(),
            timeout_ms: get("timeout_ms").and_then(|v| v.parse().ok()).unwrap_or(0),
            payload: get("payload")
                .and_then(|p| serde_json::from_str(p).ok())
                .unwrap_or(serde_json::Value::Null),
        })
    }
}

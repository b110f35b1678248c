//! What operators see of and do to the background machinery: the port an
//! operators' console (or `app jobs`) drives, and the plain data it shows.

use async_trait::async_trait;
use serde::Serialize;
use std::time::Duration;

/// Why an admin operation could not be done.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request itself is wrong (a bad queue name, state or cursor).
    #[error("{0}")]
    Invalid(String),
    /// The store is unreachable; try again.
    #[error("unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    #[error("{0:#}")]
    Unknown(anyhow::Error),
}

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Its id in the dead-letter stream (what `replay` takes).
    pub id: String,
    /// The entry's id in the stream it died on.
    pub original_id: String,
    pub group: String,
    pub reason: String,
    pub deliveries: u64,
    pub event_type: String,
    /// The event's JSON as it was carried.
    pub event: String,
}

/// One consumer group of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamGroup {
    pub name: String,
    pub consumers: u64,
    /// Delivered to a consumer, not yet acknowledged.
    pub pending: u64,
    /// Entries not yet delivered to the group (`None` when Redis cannot tell).
    pub lag: Option<u64>,
}

/// An event stream at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamOverview {
    pub topic: String,
    /// Entries in the stream.
    pub length: u64,
    pub dead_letters: u64,
    pub groups: Vec<StreamGroup>,
}

/// The event streams as an operator works them.
#[async_trait]
pub trait EventAdmin: Send + Sync + 'static {
    /// `topic`'s stream: its length, dead letters and consumer groups.
    async fn overview(&self, topic: &str) -> Result<StreamOverview, AdminError>;
    /// The newest `limit` dead letters of `topic`'s stream, newest first.
    async fn dead_letters(&self, topic: &str, limit: usize) -> Result<Vec<DeadLetter>, AdminError>;
    /// Puts one back on its stream. False when there is no such dead letter.
    async fn replay(&self, topic: &str, id: &str) -> Result<bool, AdminError>;
    /// Puts every dead letter of `topic` back. Returns how many.
    async fn replay_all(&self, topic: &str) -> Result<usize, AdminError>;
}

/// One queue at a glance: its counts, its controls and its last hour.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueOverview {
    pub stats: QueueStats,
    pub controls: QueueControls,
    /// Jobs processed and failed in each of the last 60 minutes, oldest first.
    pub last_hour: Vec<MinuteCount>,
}

/// What a queue did in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MinuteCount {
    /// The minute's start (ms since the epoch).
    pub minute_ms: i64,
    pub processed: u64,
    pub failed: u64,
}

/// The job queue as an operator works it.
#[async_trait]
pub trait QueueAdmin: Send + Sync + 'static {
    /// Every queue, by name.
    async fn overview(&self) -> Result<Vec<QueueOverview>, AdminError>;
    /// A page of `queue`'s jobs in `state` after `cursor`, only those of
    /// `kind` when given.
    async fn jobs(
        &self,
        queue: &str,
        state: JobState,
        kind: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage, AdminError>;
    /// One job, wherever it is; `None` when there is none.
    async fn job(&self, id: &str) -> Result<Option<JobDetail>, AdminError>;
    /// Runs a dead job again. False when `id` is not dead.
    async fn retry(&self, id: &str) -> Result<bool, AdminError>;
    /// Runs every dead job of `kind` in `queue` again. Returns how many.
    async fn retry_dead_of_kind(&self, queue: &str, kind: &str) -> Result<u64, AdminError>;
    /// Runs a scheduled job, or one waiting to retry, now. False when it is
    /// neither.
    async fn run_now(&self, id: &str) -> Result<bool, AdminError>;
    /// Deletes a job wherever it is. False when there is none.
    async fn delete(&self, id: &str) -> Result<bool, AdminError>;
    /// False when it was already paused.
    async fn pause(&self, queue: &str) -> Result<bool, AdminError>;
    /// False when it was not paused.
    async fn resume(&self, queue: &str) -> Result<bool, AdminError>;
}

/// Counts per queue, for `app jobs stats` and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    pub queue: String,
    pub pending: u64,
    pub scheduled: u64,
    pub active: u64,
    pub retry: u64,
    pub dead: u64,
    pub processed: u64,
    pub failed: u64,
    /// Paused by an operator: no worker starts its jobs.
    pub paused: bool,
}

/// A queue's controls, persisted in Redis and obeyed by every worker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueControls {
    /// Paused since (ms since the epoch); `None` when running.
    pub paused_since_ms: Option<i64>,
    /// At most this many of its jobs run at once, across all workers.
    pub concurrency: Option<u32>,
    /// At most this many of its jobs start per period.
    pub rate: Option<RateLimit>,
}

/// `jobs` starts per `per` (a burst of `jobs` at once, then evenly spaced).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    pub jobs: u32,
    #[serde(rename = "per_ms", serialize_with = "as_ms")]
    pub per: Duration,
}

fn as_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl std::str::FromStr for RateLimit {
    type Err = String;

    /// `100/s`, `6000/m`, `10/1500ms`, `50/2s`, `1000/h`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            || format!("{s:?} is not a rate: write jobs/period, e.g. 100/s, 6000/m, 10/1500ms");
        let (jobs, per) = s.split_once('/').ok_or_else(bad)?;
        let jobs: u32 = jobs.trim().parse().map_err(|_| bad())?;
        let per = per.trim();
        let split = per.find(|c: char| !c.is_ascii_digit()).unwrap_or(per.len());
        let (n, unit) = per.split_at(split);
        let n: u64 = if n.is_empty() {
            1
        } else {
            n.parse().map_err(|_| bad())?
        };
        let unit_ms = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            _ => return Err(bad()),
        };
        let per_ms = n.checked_mul(unit_ms).ok_or_else(bad)?;
        if jobs == 0 || per_ms == 0 || per_ms > 86_400_000 {
            return Err(format!(
                "{s:?}: the rate needs at least one job per period of at most a day"
            ));
        }
        Ok(Self {
            jobs,
            per: Duration::from_millis(per_ms),
        })
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}ms", self.jobs, self.per.as_millis())
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Pending,
    Scheduled,
    Active,
    Retry,
    Dead,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        Self::Pending,
        Self::Scheduled,
        Self::Active,
        Self::Retry,
        Self::Dead,
    ];

    /// The name of its key (and of the state in a job's hash).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Scheduled => "scheduled",
            Self::Active => "active",
            Self::Retry => "retry",
            Self::Dead => "dead",
        }
    }
}

impl std::str::FromStr for JobState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!("{s:?} is not a state: pending, scheduled, active, retry or dead")
            })
    }
}

/// One job as a listing shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    pub id: String,
    pub queue: String,
    pub state: JobState,
    pub kind: String,
    pub attempts: u32,
    pub max_retries: u32,
    /// For scheduled and retry jobs when they are due, for active ones their
    /// lease deadline, for dead ones when they died (ms); for pending ones
    /// when they became ready.
    pub at_ms: i64,
    pub last_error: Option<String>,
    pub payload: serde_json::Value,
}

/// One job in full, for its own page.
#[derive(Debug, Clone, Serialize)]
pub struct JobDetail {
    pub summary: JobSummary,
    pub version: u16,
    /// The handler's time limit (ms; 0: the worker's default).
    pub timeout_ms: u64,
    /// When it became ready to run (ms), if it has been.
    pub ready_at_ms: Option<i64>,
    /// When its last attempt failed (ms).
    pub failed_at_ms: Option<i64>,
    pub unique_key: Option<String>,
}

/// A page of a listing and the cursor of the next page (`None`: the end).
#[derive(Debug, Clone, Serialize)]
pub struct JobPage {
    pub jobs: Vec<JobSummary>,
    pub next: Option<String>,
}

/// One running process of the app, as its heartbeat last said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct InstanceInfo {
    pub id: String,
    /// `serve`, `worker` or `all`.
    pub role: String,
    pub version: String,
    pub started_at_ms: i64,
    pub last_seen_ms: i64,
    /// Open WebSocket connections (processes that serve the API).
    pub ws_connections: Option<u64>,
}

/// How an instance is named where it counts things (`<id>@<started ms>`):
/// a restarted process with the same id is another instance.
pub fn instance_key(id: &str, started_at_ms: i64) -> String {
    format!("{id}@{started_at_ms}")
}

impl InstanceInfo {
    /// See [`instance_key`].
    pub fn key(&self) -> String {
        instance_key(&self.id, self.started_at_ms)
    }
}

/// How long a heartbeat keeps an instance alive.
pub const INSTANCE_ALIVE_FOR: std::time::Duration = std::time::Duration::from_secs(30);
/// How often an instance beats.
pub const INSTANCE_BEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Which processes are alive: each beats every [`INSTANCE_BEAT_EVERY`]; one
/// that has not beaten for [`INSTANCE_ALIVE_FOR`] is gone.
#[async_trait]
pub trait Instances: Send + Sync + 'static {
    /// Says `info` is alive now (`last_seen_ms` is set by the caller).
    async fn beat(&self, info: &InstanceInfo) -> Result<(), AdminError>;
    /// The instances that beat within [`INSTANCE_ALIVE_FOR`], by id.
    async fn alive(&self) -> Result<Vec<InstanceInfo>, AdminError>;
}

/// A user as support sees them: the profile, the devices (fingerprints,
/// never the tokens), and the welcome mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SupportUser {
    pub uid: String,
    pub email: Option<String>,
    pub verified_email: Option<String>,
    pub display_name: Option<String>,
    pub photo_url: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub devices: Vec<SupportDevice>,
    /// When the welcome mail was claimed for sending and when it was sent.
    pub welcome_claimed_at_ms: Option<i64>,
    pub welcome_sent_at_ms: Option<i64>,
}

/// A registered push token, as a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SupportDevice {
    pub fingerprint: String,
    pub platform: String,
    pub created_at_ms: i64,
    pub last_seen_at_ms: i64,
}

/// The outbox at a glance: what waits to be relayed, and what keeps failing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutboxOverview {
    pub backlog: u64,
    /// How long the oldest unrelayed row has waited (ms).
    pub oldest_age_ms: Option<i64>,
    pub failing: Vec<OutboxFailure>,
}

/// An outbox row whose relay failed, with the last error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxFailure {
    pub seq: i64,
    pub event_type: String,
    pub attempts: i32,
    pub last_error: String,
    pub created_at_ms: i64,
}

/// What support and operators read from the database.
#[async_trait]
pub trait SupportAdmin: Send + Sync + 'static {
    /// Users whose uid is `query`, or whose address (either) is `query`
    /// (case-insensitive); at most a few.
    async fn find_users(&self, query: &str) -> Result<Vec<SupportUser>, AdminError>;
    /// The outbox's backlog and its failing rows (newest first).
    async fn outbox(&self) -> Result<OutboxOverview, AdminError>;
}

/// Which instance holds how many sockets of a user, for support: each
/// instance adds and removes its own; entries of instances no longer alive
/// (see [`Instances`]) are not counted.
#[async_trait]
pub trait SocketRegistry: Send + Sync + 'static {
    /// A socket of `uid` opened on this instance.
    async fn opened(&self, uid: &str) -> Result<(), AdminError>;
    /// A socket of `uid` closed on this instance.
    async fn closed(&self, uid: &str) -> Result<(), AdminError>;
    /// `uid`'s sockets per instance (`<instance id>@<started at ms>`).
    async fn sockets(&self, uid: &str) -> Result<Vec<(String, u64)>, AdminError>;
}

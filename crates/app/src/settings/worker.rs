//! The `worker` role: the job workers and the event stream consumers.

use super::reader::Reader;
use std::time::Duration;

pub(crate) const VARIABLES: &[&str] = &[
    "WORKER_CONCURRENCY",
    "WORKER_QUEUES",
    "JOB_LEASE_SECS",
    "JOB_RETRY_BASE_MS",
    "STREAM_CLAIM_IDLE_MS",
    "STREAM_MAX_LEN",
    "DELETION_LATE_SWEEP_SECS",
];

#[derive(Debug, Clone)]
pub struct WorkerSection {
    /// Jobs one worker process runs at once.
    pub concurrency: usize,
    /// Queues a worker takes jobs from, with weights.
    pub queues: Vec<(String, u32)>,
    pub job_lease: Duration,
    pub job_retry_base: Duration,
    /// Stream entries pending longer than this are claimed from dead consumers.
    pub stream_claim_idle: Duration,
    /// Past this length a stream is trimmed of what every group acknowledged.
    pub stream_max_len: u64,
    /// How long after the rest of an account's deletion its stored objects
    /// are swept again (what an upload form issued before the deletion
    /// brought while it was still valid).
    pub deletion_late_sweep: Duration,
}

impl WorkerSection {
    pub(crate) fn read(r: &mut Reader<'_>) -> Self {
        let concurrency = r.ranged("WORKER_CONCURRENCY", 16_usize, 1, 4096, "jobs");
        let queues = parse_queues(&r.string("WORKER_QUEUES", "mail:3,push:3,default:1"))
            .unwrap_or_else(|e| {
                r.problem("WORKER_QUEUES", e);
                Vec::new()
            });
        let job_lease = r.seconds("JOB_LEASE_SECS", 30, 1, 3600);
        let job_retry_base = r.millis("JOB_RETRY_BASE_MS", 2000, 1, 3_600_000);
        let stream_claim_idle = r.millis("STREAM_CLAIM_IDLE_MS", 30_000, 100, 86_400_000);
        let stream_max_len = r.ranged("STREAM_MAX_LEN", 100_000_u64, 100, 1_000_000_000, "entries");
        let deletion_late_sweep = r.seconds(
            "DELETION_LATE_SWEEP_SECS",
            usecases::LATE_SWEEP_AFTER.as_secs(),
            0,
            7 * 86_400,
        );
        Self {
            deletion_late_sweep,
            concurrency,
            queues,
            job_lease,
            job_retry_base,
            stream_claim_idle,
            stream_max_len,
        }
    }

    /// The job worker of process `instance_id`, which must be done with its
    /// jobs a moment before the process's own deadline `shutdown_timeout`.
    pub fn worker_settings(
        &self,
        instance_id: &str,
        shutdown_timeout: Duration,
    ) -> queue_adapter::WorkerSettings {
        queue_adapter::WorkerSettings {
            concurrency: self.concurrency,
            lease: self.job_lease,
            // A dead worker's jobs run again soon after their leases end.
            recover_every: (self.job_lease / 4)
                .clamp(Duration::from_millis(100), Duration::from_secs(5)),
            retry_base: self.job_retry_base,
            shutdown_timeout: shutdown_timeout
                .saturating_sub(Duration::from_secs(2))
                .max(Duration::from_secs(1)),
            ..queue_adapter::WorkerSettings::new(instance_id.to_owned(), self.queues.clone())
        }
    }

    /// One consumer (`consumer`) of consumer group `group` on `topic`.
    pub fn consumer_settings(
        &self,
        prefix: &str,
        topic: &str,
        group: &str,
        consumer: &str,
    ) -> streams_adapter::ConsumerSettings {
        streams_adapter::ConsumerSettings {
            claim_idle: self.stream_claim_idle,
            max_len: self.stream_max_len,
            ..streams_adapter::ConsumerSettings::new(prefix, topic, group, consumer)
        }
    }
}

/// `mail:3,default:1` -> `[("mail", 3), ("default", 1)]` (weight 1 if left out).
fn parse_queues(raw: &str) -> Result<Vec<(String, u32)>, String> {
    let mut out = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, weight) = item.split_once(':').unwrap_or((item, "1"));
        let weight: u32 = weight
            .trim()
            .parse()
            .map_err(|_| format!("weight of {name:?} must be a number"))?;
        let valid = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !valid || weight == 0 {
            return Err(format!(
                "{item:?} must be name:weight with a lowercase name and a weight of at least 1"
            ));
        }
        out.push((name.to_owned(), weight));
    }
    if out.is_empty() {
        return Err("must name at least one queue".into());
    }
    Ok(out)
}

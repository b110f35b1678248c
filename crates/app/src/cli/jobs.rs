//! `app jobs ...`: look at and repair the job queue.

use clap::Subcommand;

/// What `app jobs` is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum JobsCommand {
    /// Counts per queue: pending, scheduled, active, retry, dead, processed, failed.
    Stats,
    /// The most recent dead jobs with their last error.
    Dead {
        #[arg(long)]
        queue: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Run a dead job again (`<id>`), or every dead job (`--all`).
    Retry {
        id: Option<String>,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        queue: Option<String>,
    },
    /// Delete a job wherever it is.
    Delete { id: String },
    /// Pause a queue: no worker starts its jobs until it is resumed
    /// (persisted; jobs running now finish).
    Pause { queue: String },
    /// Resume a paused queue.
    Resume { queue: String },
    /// Cap a queue's jobs running at once across all workers, and/or limit
    /// how many start per period (jobs over it wait; none fails).
    Limit {
        queue: String,
        /// Jobs running at once across all workers (0: no cap).
        #[arg(long)]
        concurrency: Option<u32>,
        /// Jobs started per period: `100/s`, `6000/m`, `10/1500ms`, or `off`.
        #[arg(long)]
        rate: Option<String>,
    },
    /// A page of a queue's jobs in one state (pending oldest first,
    /// scheduled/retry/active soonest first, dead newest first).
    List {
        queue: String,
        #[arg(long, default_value = "pending")]
        state: queue_adapter::JobState,
        /// The `next page` cursor a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

//! `app events ...`: the event streams' dead letters.

use clap::Subcommand;

/// What `app events` is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum EventsCommand {
    /// The newest dead letters of a stream, with why each died.
    Dead {
        /// The stream (its topic).
        #[arg(long, default_value = "users")]
        stream: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Put a dead letter (or every one) back on its stream.
    Replay {
        /// The dead letter's id (from `app events dead`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every dead letter of the stream.
        #[arg(long)]
        all: bool,
        #[arg(long, default_value = "users")]
        stream: String,
    },
}

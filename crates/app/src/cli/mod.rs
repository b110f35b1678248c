//! The command line: `app <command>` (`app --help`). What each command
//! does lives beside what it drives (`jobs.rs`, `events.rs`, `doctor.rs`,
//! `startup.rs`); `main.rs` dispatches.

mod events;
mod jobs;

pub use events::EventsCommand;
pub use jobs::JobsCommand;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "app", version, about = "Trellis: a backend for mobile apps")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP and WebSocket clients.
    Serve,
    /// Run queue workers, stream consumers and the outbox relay.
    Worker,
    /// Serve and work in one process (the default).
    All,
    /// Apply pending database migrations, then exit.
    Migrate,
    /// Check every configured dependency (TLS, versions, a pooler,
    /// migrations, Redis' eviction policy, SMTP, the bucket, FCM) and print
    /// a table; exits non-zero if any check fails.
    Doctor,
    /// Print the OpenAPI document (JSON) on stdout.
    Openapi,
    /// Print the AsyncAPI document of `/ws` (JSON) on stdout.
    Asyncapi,
    /// Read an operator password on stdin and print its argon2 hash, for
    /// OPS_PASSWORD_HASH (or OPS_VIEWER_PASSWORD_HASH).
    OpsPassword,
    /// Inspect and repair the job queue.
    Jobs {
        #[command(subcommand)]
        action: JobsCommand,
    },
    /// Inspect and replay the event streams' dead letters.
    Events {
        #[command(subcommand)]
        action: EventsCommand,
    },
    /// Print a token that a locally running app accepts (local mode only).
    DevToken {
        /// The Firebase uid the token is for.
        #[arg(long)]
        uid: String,
        #[arg(long)]
        email: Option<String>,
        /// Mark the address unverified (`email_verified: false`, as for a
        /// password sign-up before its verification link is clicked): it is
        /// stored, but no welcome mail goes to it.
        #[arg(long)]
        unverified: bool,
        /// Display name (the `name` claim).
        #[arg(long)]
        name: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
        /// A custom claim `name=value` (the value as JSON if it parses, else
        /// a string), e.g. `--claim ops=admin`; repeatable.
        #[arg(long = "claim")]
        claims: Vec<String>,
    },
}

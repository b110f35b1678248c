//! `app`: the Trellis binary. See `app --help`.

use app::{Application, LogFormat, Role, Settings, telemetry};
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "app", version, about = "Trellis: a backend for mobile apps")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
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

#[derive(Debug, Subcommand)]
enum EventsCommand {
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

impl From<EventsCommand> for app::events::EventsAction {
    fn from(c: EventsCommand) -> Self {
        match c {
            EventsCommand::Dead { stream, limit } => Self::Dead { stream, limit },
            EventsCommand::Replay { id, all, stream } => Self::Replay { id, all, stream },
        }
    }
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
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

impl From<JobsCommand> for app::jobs::JobsAction {
    fn from(c: JobsCommand) -> Self {
        match c {
            JobsCommand::Stats => Self::Stats,
            JobsCommand::Dead { queue, limit } => Self::Dead { queue, limit },
            JobsCommand::Retry { id, all, queue } => Self::Retry { id, all, queue },
            JobsCommand::Delete { id } => Self::Delete { id },
            JobsCommand::Pause { queue } => Self::Pause { queue },
            JobsCommand::Resume { queue } => Self::Resume { queue },
            JobsCommand::Limit {
                queue,
                concurrency,
                rate,
            } => Self::Limit {
                queue,
                concurrency,
                rate,
            },
            JobsCommand::List {
                queue,
                state,
                cursor,
                limit,
            } => Self::List {
                queue,
                state,
                cursor,
                limit,
            },
        }
    }
}

fn print(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

fn load_settings() -> Result<Settings, ExitCode> {
    Settings::from_env().map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// Reports a fatal error once: as a JSON log line when logs are JSON (so log
/// pipelines see it), else as plain text on stderr.
fn fail(e: &anyhow::Error, logs: LogFormat) -> ExitCode {
    match logs {
        LogFormat::Json => tracing::error!(error = %format!("{e:#}"), "fatal"),
        LogFormat::Pretty => eprintln!("error: {e:#}"),
    }
    ExitCode::FAILURE
}

#[tokio::main]
async fn main() -> ExitCode {
    // One TLS crypto provider for every crate (reqwest, lettre, fred).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::All);

    if let Command::Openapi | Command::Asyncapi = command {
        let spec = match command {
            Command::Openapi => serde_json::to_value(http_api::openapi_spec()),
            _ => Ok(app::asyncapi()),
        };
        return match spec.and_then(|s| serde_json::to_string_pretty(&s)) {
            Ok(json) => {
                print(&format!("{json}\n"));
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.into(), LogFormat::Pretty),
        };
    }

    if let Command::OpsPassword = command {
        let mut line = String::new();
        if std::io::stdin().read_line(&mut line).is_err() {
            eprintln!("error: cannot read the password from stdin");
            return ExitCode::from(2);
        }
        let password = line.trim_end_matches(['\r', '\n']);
        if password.chars().count() < 12 {
            eprintln!("error: an operator password has at least 12 characters");
            return ExitCode::from(2);
        }
        return match ops_console::hash_password(password) {
            Ok(hash) => {
                print(&format!("{hash}\n"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }

    // A developer's token tool reads an unset APP_ENV as local; every
    // other command (the servers among them) as production.
    let loaded = match command {
        Command::DevToken { .. } => Settings::from_env_for_tools().map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }),
        _ => load_settings(),
    };
    let settings = match loaded {
        Ok(s) => s,
        Err(code) => return code,
    };
    telemetry::init_logging(settings.log_format);
    telemetry::install_panic_hook();
    let logs = settings.log_format;

    match command {
        Command::Openapi | Command::Asyncapi | Command::OpsPassword => ExitCode::SUCCESS,
        Command::DevToken {
            uid,
            email,
            unverified,
            name,
            ttl_secs,
            claims,
        } => {
            let mut custom = serde_json::Map::new();
            for c in claims {
                let Some((k, v)) = c.split_once('=').filter(|(k, _)| !k.is_empty()) else {
                    eprintln!("error: --claim takes name=value (got {c:?})");
                    return ExitCode::from(2);
                };
                let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::from(v));
                custom.insert(k.to_owned(), value);
            }
            let claims = custom;
            let Some(secret) = settings.auth.dev_token_secret.as_deref() else {
                eprintln!("error: dev tokens exist only in local mode (APP_ENV=local)");
                return ExitCode::from(2);
            };
            let req = auth_adapter::DevTokenRequest {
                uid,
                email,
                email_verified: !unverified,
                name,
                ttl: Duration::from_secs(ttl_secs),
                claims,
            };
            match auth_adapter::mint_dev_token(secret, &settings.auth.firebase_project_id, &req) {
                Ok(token) => {
                    print(&format!("{token}\n"));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e, logs),
            }
        }
        Command::Jobs { action } => match app::jobs::run(&settings, action.into()).await {
            Ok(text) => {
                print(&text);
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e, logs),
        },
        Command::Events { action } => match app::events::run(&settings, action.into()).await {
            Ok(text) => {
                print(&text);
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e, logs),
        },
        Command::Doctor => {
            let report = app::doctor::run(&settings).await;
            print(&report.render());
            if report.failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Migrate => {
            let mut s = settings;
            s.migrate_on_start = true;
            match app::startup::prepare_database(&s).await {
                Ok(()) => {
                    tracing::info!("migrations are up to date");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e, logs),
            }
        }
        Command::Serve | Command::Worker | Command::All => {
            let role = match command {
                Command::Serve => Role::Serve,
                Command::Worker => Role::Worker,
                _ => Role::All,
            };
            tracing::info!(?role, settings = ?settings, "starting");
            let app = match Application::build(settings, role).await {
                Ok(app) => app,
                Err(e) => return fail(&e, logs),
            };
            app.stop_on_signal();
            match app.run_until_stopped().await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e, logs),
            }
        }
    }
}

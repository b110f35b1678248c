//! `app`: the Trellis binary. See `app --help`.

use app::cli::{Cli, Command};
use app::{Application, LogFormat, Role, Settings, telemetry};
use clap::Parser as _;
use std::process::ExitCode;
use std::time::Duration;

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
            let Some(secret) = settings
                .auth
                .dev_token_secret
                .as_ref()
                .map(secrecy::ExposeSecret::expose_secret)
            else {
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
        Command::Jobs { action } => match app::jobs::run(&settings, action).await {
            Ok(text) => {
                print(&text);
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e, logs),
        },
        Command::Events { action } => match app::events::run(&settings, action).await {
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

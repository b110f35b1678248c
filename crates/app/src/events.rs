//! `app events ...`: the event streams' dead letters, and replaying them.

use crate::cli::EventsCommand;
use crate::settings::Settings;
use secrecy::ExposeSecret as _;
use std::fmt::Write as _;
use std::time::Duration;
use streams_adapter::StreamAdmin;

/// Runs `action` and returns what to print.
pub async fn run(settings: &Settings, action: EventsCommand) -> anyhow::Result<String> {
    let client = streams_adapter::connect_with_tls(
        settings.redis.url.expose_secret(),
        &settings.redis.tls,
        Duration::from_secs(2),
    )
    .await?;
    let admin = StreamAdmin::new(client, settings.redis.key_prefix.clone());
    let mut out = String::new();
    match action {
        EventsCommand::Dead { stream, limit } => {
            let dead = admin.dead_letters(&stream, limit).await?;
            if dead.is_empty() {
                writeln!(out, "no dead letters on {stream}")?;
            }
            for d in dead {
                writeln!(
                    out,
                    "{}  {}  group={}  deliveries={}  original={}\n    reason: {}",
                    d.id, d.event_type, d.group, d.deliveries, d.original_id, d.reason
                )?;
            }
        }
        EventsCommand::Replay {
            id: Some(id),
            stream,
            ..
        } => match admin.replay(&stream, &id).await? {
            Some(new_id) => writeln!(out, "replayed {id} as {new_id} on {stream}")?,
            None => anyhow::bail!("no dead letter {id} on {stream}"),
        },
        EventsCommand::Replay {
            id: None,
            all: true,
            stream,
        } => {
            let n = admin.replay_all(&stream).await?;
            writeln!(out, "replayed {n} dead letter(s) on {stream}")?;
        }
        EventsCommand::Replay { id: None, .. } => {
            anyhow::bail!("name a dead letter id, or pass --all")
        }
    }
    Ok(out)
}

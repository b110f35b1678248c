//! The worker role in one list: the outbox relay, the consumer groups, the
//! job handlers and the schedules. Adding a consumer group, a job or a
//! schedule is one line in [`start_workers`].

use super::Infrastructure;
use super::adapters::{identity_admin, object_store};
use super::realtime::worker_realtime;
use crate::settings::{AppEnv, Settings};
use domain::events::USERS_TOPIC;
use mail_adapter::LettreMailer;
use ports::EventConsumer as _;
use postgres_adapter::{
    PgOutbox, PgPushTokenRepository, PgUploadRepository, PgUserRepository, PgWelcomeLedger,
};
use queue_adapter::JobWorker;
use secrecy::ExposeSecret as _;
use std::sync::Arc;
use streams_adapter::{RedisStreamConsumer, RedisStreamPublisher};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use usecases::{
    ACCOUNT_DELETION_GROUP, AccountDeletionTrigger, CleanUpUploads, CleanUpUploadsJob,
    EraseAccount, FanOutPush, ForgetDeletions, ForgetDeletionsJob, ForgetRecipientsJob,
    ForgetWelcomeRecipients, OutboxRelay, PushNotifications, RelaySettings, SendPushToDevice,
    SendWelcomeMail, SocketFirst, WELCOME_GROUP, WelcomeMailTrigger,
};

/// How many consumer groups the worker role runs (each reads on a Redis
/// connection of its own: the Redis budget counts them). The list in
/// [`start_workers`] is an array of this length, so the two cannot differ.
pub(super) const CONSUMER_GROUPS: usize = 2;

/// The background work of the `worker` role: the outbox relay, the
/// consumer groups, the job handlers and their schedules.
pub(crate) async fn start_workers(
    settings: &Settings,
    infra: &Infrastructure,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    let pg = &infra.pg;
    let queue: Arc<dyn ports::JobQueue> = Arc::new(infra.queue.clone());
    let users = Arc::new(PgUserRepository::new(pg.clone()));
    let tokens = Arc::new(PgPushTokenRepository::new(pg.clone()));
    let ledger: Arc<dyn ports::WelcomeLedger> = Arc::new(PgWelcomeLedger::new(
        pg.clone(),
        settings.http.cursor_secret.expose_secret().as_bytes(),
    ));
    let realtime = worker_realtime(settings, infra, shutdown).await?;
    let (objects, _) = object_store(settings, settings.http.port)?;

    let relay = outbox_relay(settings, infra);
    let stop = shutdown.clone();
    tasks.spawn(async move { relay.run(stop).await });

    let groups: [(&str, &str, Arc<dyn ports::EventHandler>); CONSUMER_GROUPS] = [
        (
            USERS_TOPIC,
            WELCOME_GROUP,
            Arc::new(WelcomeMailTrigger::new(queue.clone(), users.clone())),
        ),
        (
            USERS_TOPIC,
            ACCOUNT_DELETION_GROUP,
            Arc::new(AccountDeletionTrigger::new(queue.clone())),
        ),
    ];
    for (topic, group, handler) in groups {
        consume(settings, infra, topic, group, handler, shutdown, tasks);
    }

    let mut worker = JobWorker::new(
        infra.queue.clone(),
        settings
            .worker
            .worker_settings(&settings.instance_id, settings.shutdown_timeout),
    );
    worker
        .register(Arc::new(
            SendWelcomeMail::new(Arc::new(mailer(settings)?), ledger.clone())
                .with_users(users.clone()),
        ))
        .register(Arc::new(ForgetWelcomeRecipients::new(ledger)))
        .register(Arc::new(FanOutPush::new(tokens.clone(), queue.clone())))
        .register(Arc::new(SendPushToDevice::new(
            infra.push.clone(),
            tokens.clone(),
        )))
        .register(Arc::new(SocketFirst::new(
            realtime.clone(),
            PushNotifications::new(tokens, infra.push.clone(), queue.clone()),
            queue.clone(),
            settings.ws.ack_wait,
        )))
        .register(Arc::new(CleanUpUploads::new(
            Arc::new(PgUploadRepository::new(pg.clone())),
            objects.clone(),
            settings.storage.upload_settings(),
        )))
        .register(Arc::new(
            EraseAccount::new(
                users.clone(),
                objects,
                realtime,
                queue,
                identity_admin(settings)?,
            )
            .with_late_sweep(settings.worker.deletion_late_sweep),
        ))
        .register(Arc::new(ForgetDeletions::new(users)));
    worker
        // Daily at 04:17 UTC.
        .every("0 17 4 * * *", &ForgetRecipientsJob::default())?
        // Every ten minutes.
        .every("0 */10 * * * *", &CleanUpUploadsJob::default())?
        // Hourly, at 23 past.
        .every("0 23 * * * *", &ForgetDeletionsJob::default())?;
    tasks.spawn(worker.run(shutdown.clone()));
    tracing::info!(instance = %settings.instance_id, "worker role started");
    Ok(())
}

/// The outbox relay: leadership and LISTEN need a session, so it takes
/// the direct endpoint when `DATABASE_URL` is a transaction pooler.
fn outbox_relay(settings: &Settings, infra: &Infrastructure) -> OutboxRelay {
    OutboxRelay::new(
        Arc::new(PgOutbox::new(
            infra.pg.clone(),
            settings.database.session_url().to_owned(),
        )),
        Arc::new(
            RedisStreamPublisher::new(infra.fred.clone(), settings.redis.key_prefix.as_str())
                .with_replica_wait(settings.redis.replica_wait),
        ),
        RelaySettings::default(),
    )
}

/// Runs one consumer of consumer group `group` on `topic`'s stream,
/// handing its events to `handler`, until shutdown.
fn consume(
    settings: &Settings,
    infra: &Infrastructure,
    topic: &str,
    group: &str,
    handler: Arc<dyn ports::EventHandler>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    let consumer_settings = settings.worker.consumer_settings(
        &settings.redis.key_prefix,
        topic,
        group,
        &format!("{}-{group}", settings.instance_id),
    );
    let consumer = RedisStreamConsumer::new(&infra.fred, consumer_settings);
    let (stop, group) = (shutdown.clone(), group.to_owned());
    tasks.spawn(async move {
        if let Err(e) = consumer.run(handler, stop).await {
            tracing::error!(error = %e, group = %group, "a consumer group stopped");
        }
    });
}

/// The welcome mail's transport, said at startup (loudly when production
/// mail is not sent over TLS).
fn mailer(settings: &Settings) -> anyhow::Result<LettreMailer> {
    let mailer = LettreMailer::new(&settings.mail.mail_settings())?;
    if settings.env == AppEnv::Production && mailer.is_insecure_or_local() {
        tracing::warn!(to = %mailer.describe(), "mail is not sent over TLS (or only written to files) in production: set SMTP_URL to smtps://... or smtp://...?tls=required");
    } else {
        tracing::info!(to = %mailer.describe(), "mail transport ready");
    }
    Ok(mailer)
}

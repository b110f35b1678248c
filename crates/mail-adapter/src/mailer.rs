//! `LettreMailer`: SMTP (pooled; plain, STARTTLS or implicit TLS; auth) or
//! `.eml` files for local development.

use crate::templates;
use anyhow::Context as _;
use async_trait::async_trait;
use domain::Mail;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::PoolConfig;
use lettre::{
    Address, AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
};
use ports::{Mailer, SendMailError};
use std::path::PathBuf;
use std::time::Duration;

/// Where mail goes.
#[derive(Debug, Clone)]
pub struct MailSettings {
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS), `smtps://...:465`
    /// (implicit TLS) or `smtp://host:25` (plain, local relays only).
    /// `None` writes `.eml` files to `file_dir`.
    pub smtp_url: Option<String>,
    /// `Name <address>`.
    pub from: String,
    pub file_dir: PathBuf,
    /// Per SMTP command.
    pub timeout: Duration,
    /// Product name in templates.
    pub product: String,
}

impl MailSettings {
    pub fn new(from: impl Into<String>) -> Self {
        Self {
            smtp_url: None,
            from: from.into(),
            file_dir: PathBuf::from("var/mail"),
            timeout: Duration::from_secs(20),
            product: "Trellis".into(),
        }
    }
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(AsyncFileTransport<Tokio1Executor>),
}

/// Renders the templates and hands messages to SMTP or to `.eml` files.
pub struct LettreMailer {
    transport: Transport,
    from: Mailbox,
    product: String,
    description: String,
    /// Whether `SMTP_URL` carries credentials (`AUTH` after the greeting).
    authenticates: bool,
}

impl std::fmt::Debug for LettreMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LettreMailer")
            .field("transport", &self.description)
            .finish_non_exhaustive()
    }
}

/// `host:port (mode)` of an SMTP URL, without credentials.
fn describe_smtp(url: &str) -> String {
    url::Url::parse(url).map_or_else(
        |_| "SMTP".to_owned(),
        |u| {
            let mode = match (
                u.scheme(),
                u.query_pairs()
                    .find(|(k, _)| k == "tls")
                    .map(|(_, v)| v.into_owned()),
            ) {
                ("smtps", _) => "implicit TLS",
                (_, Some(t)) if t == "required" => "STARTTLS required",
                (_, Some(t)) if t == "opportunistic" => "STARTTLS if offered",
                _ => "plain, unencrypted",
            };
            // lettre's defaults when the URL has no port: 465 for implicit
            // TLS, 587 (submission) with STARTTLS, 25 for plain SMTP.
            let port = u.port().unwrap_or(match mode {
                "implicit TLS" => 465,
                "plain, unencrypted" => 25,
                _ => 587,
            });
            format!("SMTP {}:{port} ({mode})", u.host_str().unwrap_or("?"))
        },
    )
}

impl LettreMailer {
    pub fn new(settings: &MailSettings) -> anyhow::Result<Self> {
        let from: Mailbox = settings
            .from
            .parse()
            .with_context(|| format!("MAIL_FROM {:?} is not a mailbox", settings.from))?;
        let mut authenticates = false;
        let (transport, description) = match &settings.smtp_url {
            Some(url) => {
                let smtp = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .context("SMTP_URL is not a valid SMTP URL")?
                    .timeout(Some(settings.timeout))
                    .pool_config(
                        PoolConfig::new()
                            .max_size(8)
                            .idle_timeout(Duration::from_secs(60)),
                    )
                    .build();
                authenticates = url::Url::parse(url).is_ok_and(|u| !u.username().is_empty());
                (Transport::Smtp(smtp), describe_smtp(url))
            }
            None => {
                std::fs::create_dir_all(&settings.file_dir).with_context(|| {
                    format!("creating MAIL_OUTBOX_DIR {}", settings.file_dir.display())
                })?;
                let description = format!(".eml files in {}", settings.file_dir.display());
                (
                    Transport::File(AsyncFileTransport::new(&settings.file_dir)),
                    description,
                )
            }
        };
        Ok(Self {
            transport,
            from,
            product: settings.product.clone(),
            description,
            authenticates,
        })
    }

    /// Whether mail leaves through SMTP without TLS (or is only written to
    /// files): fine on a laptop, a mistake in production.
    pub fn is_insecure_or_local(&self) -> bool {
        matches!(self.transport, Transport::File(_)) || self.description.contains("unencrypted")
    }

    /// Where mail goes, for the startup log.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// For `app doctor`: opens a connection as sending would (TLS as the
    /// URL says, `AUTH` with its credentials) and asks the server for a
    /// `NOOP`. Without `SMTP_URL`, whether the directory of `.eml` files is there.
    pub async fn check(&self) -> Result<String, String> {
        match &self.transport {
            Transport::Smtp(smtp) => match smtp.test_connection().await {
                Ok(true) => Ok(format!(
                    "{}, {}: the server answered",
                    self.description,
                    if self.authenticates {
                        "authenticated"
                    } else {
                        "no credentials"
                    }
                )),
                Ok(false) => Err(format!(
                    "{}: the server did not answer NOOP",
                    self.description
                )),
                Err(e) => Err(format!("{}: {e}", self.description)),
            },
            Transport::File(_) => Ok(self.description.clone()),
        }
    }

    /// The message for `mail` (public for tests and previews).
    pub fn build(&self, mail: &Mail) -> Result<Message, SendMailError> {
        let (to, rendered) = match mail {
            Mail::Welcome(w) => {
                let address: Address =
                    w.to.as_str().parse().map_err(|e| SendMailError::Rejected {
                        reply: format!("invalid recipient address: {e}"),
                    })?;
                // The same capped, link-free name the body greets with; no
                // name at all when that falls back to the address.
                let greeting = w.greeting_name();
                let name = (greeting != w.to.as_str()).then_some(greeting);
                (
                    Mailbox::new(name, address),
                    templates::welcome(w, &self.product),
                )
            }
        };
        let domain = self.from.email.domain().to_owned();
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject)
            .message_id(Some(format!("<{}@{domain}>", mail.idempotency_key())))
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(rendered.text),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(rendered.html),
                    ),
            )
            .map_err(|e| SendMailError::Unknown(anyhow::anyhow!("building the message: {e}")))
    }
}

fn classify(e: lettre::transport::smtp::Error) -> SendMailError {
    if e.is_permanent() {
        SendMailError::Rejected {
            reply: e.to_string(),
        }
    } else {
        // 4xx replies, refused or lost connections, timeouts, TLS trouble.
        SendMailError::Unavailable {
            reason: e.to_string(),
        }
    }
}

#[async_trait]
impl Mailer for LettreMailer {
    async fn send(&self, mail: &Mail) -> Result<(), SendMailError> {
        let message = self.build(mail)?;
        let started = std::time::Instant::now();
        let result = match &self.transport {
            Transport::Smtp(t) => t.send(message).await.map(drop).map_err(classify),
            Transport::File(t) => t
                .send(message)
                .await
                .map(|id| tracing::info!(file = %id, "mail written as .eml (no SMTP_URL set)"))
                .map_err(|e| SendMailError::Unavailable {
                    reason: format!("writing the .eml file: {e}"),
                }),
        };
        let outcome = match &result {
            Ok(()) => "sent",
            Err(SendMailError::Rejected { .. }) => "rejected",
            Err(_) => "failed",
        };
        metrics::counter!("mail_sent_total", "outcome" => outcome).increment(1);
        metrics::histogram!("mail_send_duration_seconds").record(started.elapsed().as_secs_f64());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_are_described_without_credentials() {
        assert_eq!(
            describe_smtp("smtp://u:secret@in-v3.mailjet.com:587?tls=required"),
            "SMTP in-v3.mailjet.com:587 (STARTTLS required)"
        );
        assert_eq!(
            describe_smtp("smtps://u:p@smtp.example.com"),
            "SMTP smtp.example.com:465 (implicit TLS)"
        );
        assert_eq!(
            describe_smtp("smtp://127.0.0.1:2525"),
            "SMTP 127.0.0.1:2525 (plain, unencrypted)"
        );
        assert_eq!(
            describe_smtp("smtp://relay.example.com"),
            "SMTP relay.example.com:25 (plain, unencrypted)"
        );
        assert_eq!(
            describe_smtp("smtp://relay.example.com?tls=required"),
            "SMTP relay.example.com:587 (STARTTLS required)"
        );
        assert!(!describe_smtp("smtp://u:secret@h:1").contains("secret"));
    }
}

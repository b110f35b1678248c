//! Mail: the SMTP server (or a folder of `.eml` files) and the sender.

use super::reader::Reader;
use secrecy::{ExposeSecret as _, SecretString};
use std::path::PathBuf;

pub(crate) const VARIABLES: &[&str] = &["SMTP_URL", "MAIL_FROM", "MAIL_OUTBOX_DIR"];

/// Secrets are `SecretString`s: their `Debug` prints `[REDACTED]`.
#[derive(Clone, Debug)]
pub struct MailSection {
    /// May hold a password: never printed.
    pub smtp_url: Option<SecretString>,
    pub from: String,
    /// Where mail is written as `.eml` files without `SMTP_URL`. Its
    /// variable keeps the name users know, `MAIL_OUTBOX_DIR`; in the code
    /// "outbox" means only the transactional outbox.
    pub file_dir: PathBuf,
}

impl MailSection {
    pub(crate) fn read(r: &mut Reader<'_>) -> Self {
        let smtp_url = r.raw("SMTP_URL");
        if let Some(u) = &smtp_url
            && !url::Url::parse(u)
                .is_ok_and(|u| matches!(u.scheme(), "smtp" | "smtps") && u.has_host())
        {
            r.problem("SMTP_URL", "must be an smtp:// or smtps:// URL");
        }
        let from = r.string("MAIL_FROM", "Trellis <no-reply@trellis.local>");
        if !from.contains('@') {
            r.problem(
                "MAIL_FROM",
                format!("must be an address like \"Name <no-reply@example.com>\" (got {from:?})"),
            );
        }
        let file_dir = PathBuf::from(r.string("MAIL_OUTBOX_DIR", "var/mail"));
        Self {
            smtp_url: smtp_url.map(SecretString::from),
            from,
            file_dir,
        }
    }

    /// What the mailer takes.
    pub fn mail_settings(&self) -> mail_adapter::MailSettings {
        mail_adapter::MailSettings {
            smtp_url: self.smtp_url.as_ref().map(|u| u.expose_secret().to_owned()),
            file_dir: self.file_dir.clone(),
            ..mail_adapter::MailSettings::new(self.from.clone())
        }
    }
}

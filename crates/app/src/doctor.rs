//! `app doctor`: every configured dependency as this process would reach
//! it, run in the target environment before going live. A table on stdout;
//! any failure makes the exit status non-zero. URLs and secrets are never
//! printed: rows name the variable, and a host at most.
//!
//! Longer than 450 lines: one check per dependency, in the order of the table
//! it prints, with its unit tests.

use crate::settings::{AppEnv, Settings};
use secrecy::ExposeSecret as _;
use std::fmt::Write as _;
use std::time::Duration;

/// How long each step may take (a connection, a handshake, a request).
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// A certificate expiring sooner than this is a warning.
const EXPIRY_WARNING_DAYS: i64 = 21;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Works, but not as production should have it.
    Warn,
    Fail,
    /// Not configured: nothing to check.
    Skip,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
            Self::Skip => "skip",
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub dependency: String,
    pub check: &'static str,
    pub verdict: Verdict,
    pub detail: String,
}

/// What `app doctor` found.
#[derive(Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
}

impl Report {
    fn add(&mut self, dependency: &str, check: &'static str, verdict: Verdict, detail: String) {
        self.rows.push(Row {
            dependency: dependency.to_owned(),
            check,
            verdict,
            detail,
        });
    }

    /// Whether any check failed.
    pub fn failed(&self) -> bool {
        self.rows.iter().any(|r| r.verdict == Verdict::Fail)
    }

    /// The table, then a one-line summary.
    pub fn render(&self) -> String {
        let width = |f: &dyn Fn(&Row) -> usize, title: &str| {
            self.rows.iter().map(f).max().unwrap_or(0).max(title.len())
        };
        let dep = width(&|r| r.dependency.len(), "dependency");
        let check = width(&|r| r.check.len(), "check");
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<dep$}  {:<check$}  {:<6}  detail",
            "dependency", "check", "result"
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:<dep$}  {:<check$}  {:<6}  {}",
                r.dependency,
                r.check,
                r.verdict.as_str(),
                r.detail
            );
        }
        let count = |v: Verdict| self.rows.iter().filter(|r| r.verdict == v).count();
        let _ = writeln!(
            out,
            "\n{} failed, {} warnings, {} ok",
            count(Verdict::Fail),
            count(Verdict::Warn),
            count(Verdict::Ok)
        );
        out
    }
}

/// Runs every check `settings` call for.
pub async fn run(settings: &Settings) -> Report {
    let mut report = Report::default();
    postgres(settings, &mut report).await;
    redis(settings, &mut report).await;
    mail(settings, &mut report).await;
    storage(settings, &mut report).await;
    push(settings, &mut report).await;
    report
}

/// The subject and expiry of a DER certificate, and whether it is close to
/// (or past) its end.
fn certificate(der: &[u8]) -> (String, Verdict) {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return ("an unreadable certificate".to_owned(), Verdict::Warn);
    };
    let not_after = cert.validity().not_after.timestamp();
    let days = (not_after - chrono::Utc::now().timestamp()).div_euclid(86_400);
    let until = chrono::DateTime::from_timestamp(not_after, 0).map_or_else(
        || not_after.to_string(),
        |t| t.format("%Y-%m-%d").to_string(),
    );
    let verdict = match days {
        d if d < 0 => Verdict::Fail,
        d if d < EXPIRY_WARNING_DAYS => Verdict::Warn,
        _ => Verdict::Ok,
    };
    let when = if days < 0 {
        format!("expired {until}")
    } else {
        format!("valid until {until}, {days} days")
    };
    (format!("certificate {} {when}", cert.subject()), verdict)
}

/// The TLS row of a handshake.
fn tls_row(
    report: &mut Report,
    dependency: &str,
    handshake: Result<Option<ports::TlsHandshake>, String>,
    plaintext: Verdict,
) {
    match handshake {
        Ok(Some(h)) => {
            let (cert, cert_verdict) = h
                .peer_certificate
                .as_deref()
                .map_or(("no certificate".to_owned(), Verdict::Warn), certificate);
            let (verified, verdict) = match &h.verified_against {
                Some(roots) => (format!("verified against {roots}"), cert_verdict),
                None => (
                    "NOT verified (use sslmode=verify-full with sslrootcert)".to_owned(),
                    Verdict::Warn,
                ),
            };
            let verdict = if cert_verdict == Verdict::Fail {
                Verdict::Fail
            } else {
                verdict
            };
            report.add(
                dependency,
                "tls",
                verdict,
                format!("{}, {verified}, {cert}", h.protocol),
            );
        }
        Ok(None) => report.add(dependency, "tls", plaintext, "not encrypted".to_owned()),
        Err(e) => report.add(dependency, "tls", Verdict::Fail, e),
    }
}

/// What an unencrypted connection counts as: fine on this machine or
/// locally, a warning elsewhere.
fn plaintext_verdict(settings: &Settings, host: Option<String>) -> Verdict {
    let loopback = host.is_some_and(|h| {
        h == "localhost"
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    if loopback || settings.env == AppEnv::Local {
        Verdict::Ok
    } else {
        Verdict::Warn
    }
}

fn host_of(url: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .host_str()
        .map(|h| h.trim_matches(['[', ']']).to_owned())
}

/// Host names of the managed poolers: Neon's `-pooler` endpoints,
/// Supabase's Supavisor, RDS Proxy.
fn pooler_host(host: &str) -> bool {
    host.contains("-pooler.") || host.contains("pooler.supabase.com") || host.contains(".proxy-")
}

async fn postgres(settings: &Settings, report: &mut Report) {
    let db = &settings.database;
    let mut endpoints = vec![("postgres (DATABASE_URL)", db.url.expose_secret())];
    if let Some(direct) = &db.direct_url {
        endpoints.push(("postgres (DATABASE_DIRECT_URL)", direct.expose_secret()));
    }
    for (i, (name, url)) in endpoints.into_iter().enumerate() {
        let found = postgres_adapter::inspect(url, STEP_TIMEOUT).await;
        tls_row(
            report,
            name,
            found.tls,
            plaintext_verdict(settings, host_of(url)),
        );
        match &found.server {
            Ok(server) => report.add(
                name,
                "reachable",
                Verdict::Ok,
                format!("PostgreSQL {}", server.version),
            ),
            Err(e) => report.add(name, "reachable", Verdict::Fail, e.clone()),
        }
        if i == 0 {
            pooler_row(settings, report, name, url, found.server.as_ref().ok());
        }
    }
    let name = if db.direct_url.is_some() {
        "postgres (DATABASE_DIRECT_URL)"
    } else {
        "postgres (DATABASE_URL)"
    };
    match tokio::time::timeout(
        STEP_TIMEOUT * 2,
        postgres_adapter::pending_migrations(db.session_url()),
    )
    .await
    {
        Ok(Ok((pending, applied))) if pending.is_empty() => report.add(
            name,
            "migrations",
            Verdict::Ok,
            format!("up to date ({applied} applied)"),
        ),
        Ok(Ok((pending, _))) => report.add(
            name,
            "migrations",
            Verdict::Fail,
            format!(
                "{} pending ({}): run `app migrate`",
                pending.len(),
                pending.join(", ")
            ),
        ),
        Ok(Err(e)) => report.add(name, "migrations", Verdict::Fail, format!("{e:#}")),
        Err(_) => report.add(
            name,
            "migrations",
            Verdict::Fail,
            format!("no answer within {:?}", STEP_TIMEOUT * 2),
        ),
    }
}

/// Whether a transaction pooler is in front of `DATABASE_URL`, and
/// whether the settings say so.
fn pooler_row(
    settings: &Settings,
    report: &mut Report,
    name: &str,
    url: &str,
    server: Option<&postgres_adapter::PgServer>,
) {
    let declared = settings.database.through_pooler();
    let by_port = server.and_then(|s| {
        s.port
            .filter(|p| *p != s.url_port)
            .map(|p| format!("the server listens on {p}, the URL names {}", s.url_port))
    });
    let by_name = host_of(url)
        .filter(|h| pooler_host(h))
        .map(|h| format!("{h} is a pooler's host name"));
    let evidence = by_port.or(by_name);
    let (verdict, detail) = match (evidence, declared) {
        (Some(why), true) => (
            Verdict::Ok,
            format!("a pooler is in between ({why}); sessions use DATABASE_DIRECT_URL"),
        ),
        (Some(why), false) => (
            Verdict::Fail,
            format!(
                "something is in between ({why}): if it is a transaction pooler, set DATABASE_DIRECT_URL to the direct endpoint"
            ),
        ),
        (None, true) => (
            Verdict::Warn,
            "DATABASE_DIRECT_URL is set but DATABASE_URL looks direct (same port): no pooler seen"
                .to_owned(),
        ),
        (None, false) if server.is_none() => (Verdict::Skip, "not reachable".to_owned()),
        (None, false) => (Verdict::Ok, "direct: no pooler in between".to_owned()),
    };
    report.add(name, "pooler", verdict, detail);
}

async fn redis(settings: &Settings, report: &mut Report) {
    let r = &settings.redis;
    let name = "redis (REDIS_URL)";
    let found = streams_adapter::inspect(r.url.expose_secret(), &r.tls, STEP_TIMEOUT).await;
    if let Some(handshake) = found.tls {
        tls_row(report, name, handshake.map(Some), Verdict::Fail);
    } else {
        let verdict = plaintext_verdict(settings, host_of(r.url.expose_secret()));
        report.add(name, "tls", verdict, "not encrypted (redis://)".to_owned());
    }
    let server = match found.server {
        Ok(s) => s,
        Err(e) => {
            report.add(name, "reachable", Verdict::Fail, e);
            return;
        }
    };
    report.add(
        name,
        "reachable",
        Verdict::Ok,
        format!("Redis {}, {}", server.version, server.mode),
    );
    let (verdict, detail) = match (server.aof, server.rdb_save.as_deref()) {
        (true, _) => (Verdict::Ok, "AOF on".to_owned()),
        (false, Some("")) => (
            Verdict::Warn,
            "none (no AOF, no snapshots): a restart loses every queued job".to_owned(),
        ),
        (false, Some(save)) => (
            Verdict::Warn,
            format!(
                "snapshots only (save {save}): a restart loses the jobs since the last one; turn AOF on"
            ),
        ),
        (false, None) => (
            Verdict::Warn,
            "AOF off; CONFIG is refused here: check the provider's persistence setting".to_owned(),
        ),
    };
    report.add(name, "persistence", verdict, detail);
    report.add(
        name,
        "eviction",
        if server.evicts() {
            Verdict::Fail
        } else {
            Verdict::Ok
        },
        if server.evicts() {
            format!(
                "maxmemory-policy {}: Redis may silently evict queued jobs and stream entries; set noeviction",
                server.maxmemory_policy
            )
        } else {
            "maxmemory-policy noeviction".to_owned()
        },
    );
}

async fn mail(settings: &Settings, report: &mut Report) {
    let name = "smtp (SMTP_URL)";
    let mailer = match mail_adapter::LettreMailer::new(&settings.mail.mail_settings()) {
        Ok(m) => m,
        Err(e) => return report.add(name, "connect", Verdict::Fail, format!("{e:#}")),
    };
    if settings.mail.smtp_url.is_none() {
        let verdict = if settings.env == AppEnv::Local {
            Verdict::Skip
        } else {
            Verdict::Warn
        };
        return report.add(
            name,
            "connect",
            verdict,
            format!("unset: mail is written as {}", mailer.describe()),
        );
    }
    match tokio::time::timeout(STEP_TIMEOUT * 2, mailer.check()).await {
        Ok(Ok(detail)) => {
            let verdict = if mailer.is_insecure_or_local() && settings.env != AppEnv::Local {
                Verdict::Warn
            } else {
                Verdict::Ok
            };
            report.add(name, "connect", verdict, detail);
        }
        Ok(Err(e)) => report.add(name, "connect", Verdict::Fail, e),
        Err(_) => report.add(
            name,
            "connect",
            Verdict::Fail,
            format!("no answer within {:?}", STEP_TIMEOUT * 2),
        ),
    }
}

async fn storage(settings: &Settings, report: &mut Report) {
    let name = "storage (STORAGE_BUCKET)";
    let s = &settings.storage;
    let Some(bucket) = &s.bucket else {
        return report.add(
            name,
            "signed request",
            Verdict::Skip,
            format!(
                "unset: files are kept in {} and served by the app",
                s.local_dir.display()
            ),
        );
    };
    let store = match storage_adapter::S3Store::new(&s.storage_settings(), bucket) {
        Ok(store) => store,
        Err(e) => return report.add(name, "signed request", Verdict::Fail, format!("{e:#}")),
    };
    match tokio::time::timeout(STEP_TIMEOUT * 2, store.check()).await {
        Ok(Ok(detail)) => report.add(name, "signed request", Verdict::Ok, detail),
        Ok(Err(e)) => report.add(name, "signed request", Verdict::Fail, e),
        Err(_) => report.add(
            name,
            "signed request",
            Verdict::Fail,
            format!("no answer within {:?}", STEP_TIMEOUT * 2),
        ),
    }
}

async fn push(settings: &Settings, report: &mut Report) {
    let name = "fcm (GOOGLE_APPLICATION_CREDENTIALS)";
    let sender = match crate::wiring::fcm_sender(settings) {
        Ok(Some(sender)) => sender,
        Ok(None) => {
            let verdict = if settings.env == AppEnv::Local {
                Verdict::Skip
            } else {
                Verdict::Warn
            };
            return report.add(
                name,
                "access token",
                verdict,
                "unset: push notifications are logged, not sent".to_owned(),
            );
        }
        Err(e) => return report.add(name, "access token", Verdict::Fail, format!("{e:#}")),
    };
    match tokio::time::timeout(STEP_TIMEOUT * 2, sender.check()).await {
        Ok(Ok(detail)) => report.add(name, "access token", Verdict::Ok, detail),
        Ok(Err(e)) => report.add(name, "access token", Verdict::Fail, e),
        Err(_) => report.add(
            name,
            "access token",
            Verdict::Fail,
            format!("no answer within {:?}", STEP_TIMEOUT * 2),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lines_up_and_counts() {
        let mut r = Report::default();
        r.add("postgres", "tls", Verdict::Ok, "TLSv1.3".into());
        r.add("redis (REDIS_URL)", "eviction", Verdict::Fail, "lru".into());
        let text = r.render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("dependency         check     result  detail"));
        assert!(lines[1].starts_with("postgres           tls       ok      TLSv1.3"));
        assert!(lines[2].starts_with("redis (REDIS_URL)  eviction  FAIL    lru"));
        assert!(text.ends_with("1 failed, 0 warnings, 1 ok\n"), "{text}");
        assert!(r.failed());
    }

    #[test]
    fn managed_poolers_are_known_by_their_host_names() {
        for host in [
            "ep-cool-name-123456-pooler.us-east-2.aws.neon.tech",
            "aws-0-eu-central-1.pooler.supabase.com",
            "my-proxy.proxy-abc123.us-east-1.rds.amazonaws.com",
        ] {
            assert!(pooler_host(host), "{host}");
        }
        for host in [
            "ep-cool-name-123456.us-east-2.aws.neon.tech",
            "db.abcdefgh.supabase.co",
            "mydb.abc123.us-east-1.rds.amazonaws.com",
        ] {
            assert!(!pooler_host(host), "{host}");
        }
    }
}

//! Typed settings from the environment (and an optional `.env`). Every
//! problem is collected and reported at once; nothing else reads the
//! environment.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// `local` (the default: dev tokens accepted, database created if missing,
/// migrations on start) or `production` (none of that; more is required).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Local,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Everything the process is configured with.
#[derive(Clone)]
pub struct Settings {
    pub env: AppEnv,
    pub http_host: String,
    pub http_port: u16,
    pub database_url: String,
    pub database_max_connections: usize,
    pub redis_url: String,
    /// Every Redis key, stream and channel this process uses starts with it.
    pub redis_key_prefix: String,
    pub firebase_project_id: String,
    pub firebase_auth_emulator_host: Option<String>,
    pub firebase_keys_url: String,
    pub dev_token_secret: Option<String>,
    pub smtp_url: Option<String>,
    pub mail_from: String,
    pub mail_outbox_dir: PathBuf,
    pub google_application_credentials: Option<PathBuf>,
    /// FCM HTTP v1's base URL (tests point it at a local server).
    pub fcm_base_url: String,
    /// The OAuth2 token endpoint; `None`: the key file's `token_uri`.
    pub fcm_token_url: Option<String>,
    /// The project FCM messages go out as; `None`: the key file's
    /// `project_id`, then `FIREBASE_PROJECT_ID`.
    pub fcm_project_id: Option<String>,
    pub log_format: LogFormat,
    pub shutdown_timeout: Duration,
    /// After SIGTERM, how long `serve`/`all` keep accepting and serving
    /// while `/readyz` answers 503, before the listener closes
    /// (`SHUTDOWN_DRAIN_MS`, default 0). For load balancers that learn of a
    /// stop only from readiness; Kubernetes' preStop sleep does the same job.
    pub shutdown_drain: Duration,
    pub migrate_on_start: bool,
    pub cors_allowed_origins: Vec<String>,
    pub http_json_limit_bytes: usize,
    pub cursor_secret: String,
    /// Unique per replica: consumer names, worker ids, fan-out origin.
    pub instance_id: String,
    /// Jobs one worker process runs at once.
    pub worker_concurrency: usize,
    /// Queues a worker takes jobs from, with weights.
    pub worker_queues: Vec<(String, u32)>,
    pub job_lease: Duration,
    pub job_retry_base: Duration,
    /// Stream entries pending longer than this are claimed from dead consumers.
    pub stream_claim_idle: Duration,
    /// Approximate cap of each event stream.
    pub stream_max_len: u64,
    pub ws_max_message_bytes: usize,
    pub ws_outbound_queue: usize,
    pub ws_ping_interval: Duration,
    pub ws_idle_timeout: Duration,
    pub ws_handler_concurrency: usize,
    /// Sockets one user may hold on one instance; 0: no limit.
    pub ws_max_connections_per_user: usize,
    /// Requests per window per user; 0 turns the limit off.
    pub rate_limit_per_user: u32,
    /// Requests per window per IP for unauthenticated requests; 0: off.
    pub rate_limit_per_ip: u32,
    pub rate_limit_window: Duration,
    /// The proxies whose `X-Forwarded-For` is believed (`TRUST_FORWARDED_FOR`).
    pub trusted_proxies: Vec<http_api::Cidr>,
    /// Where `/metrics` is served instead of the public listener
    /// (`METRICS_ADDR`); `None`: on the public listener.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl fmt::Debug for Settings {
    /// Secrets and URLs with credentials are not printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("env", &self.env)
            .field("http_port", &self.http_port)
            .field("firebase_project_id", &self.firebase_project_id)
            .field("emulator", &self.firebase_auth_emulator_host)
            .field("smtp", &self.smtp_url.is_some())
            .field("instance_id", &self.instance_id)
            .finish_non_exhaustive()
    }
}

/// Every invalid or missing setting, with the variable that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    pub problems: Vec<(String, String)>,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem{}):",
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )?;
        for (var, problem) in &self.problems {
            writeln!(f, "  {var}: {problem}")?;
        }
        write!(f, "See the configuration table in README.md.")
    }
}

impl std::error::Error for SettingsError {}

/// Reads variables through `lookup`, collecting problems instead of stopping
/// at the first.
struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<(String, String)>,
}

impl Reader<'_> {
    fn raw(&self, var: &str) -> Option<String> {
        (self.lookup)(var).filter(|v| !v.trim().is_empty())
    }

    fn string(&self, var: &str, default: &str) -> String {
        self.raw(var).unwrap_or_else(|| default.to_owned())
    }

    fn problem(&mut self, var: &str, message: impl Into<String>) {
        self.problems.push((var.to_owned(), message.into()));
    }

    fn parsed<T: std::str::FromStr>(&mut self, var: &str, default: T, what: &str) -> T {
        match self.raw(var) {
            None => default,
            Some(v) => v.trim().parse().unwrap_or_else(|_| {
                self.problem(var, format!("must be {what} (got {v:?})"));
                default
            }),
        }
    }

    /// A number within `min..=max`; outside it is a problem, not a silent clamp.
    fn ranged<T>(&mut self, var: &str, default: T, min: T, max: T, unit: &str) -> T
    where
        T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
    {
        let what = format!("a number of {unit} from {min} to {max}");
        let v = self.parsed(var, default, &what);
        if v < min || v > max {
            self.problem(var, format!("must be {what} (got {v})"));
            return default;
        }
        v
    }

    fn bool(&mut self, var: &str, default: bool) -> bool {
        match self.raw(var).map(|v| v.trim().to_ascii_lowercase()) {
            None => default,
            Some(v) if ["1", "true", "yes", "on"].contains(&v.as_str()) => true,
            Some(v) if ["0", "false", "no", "off"].contains(&v.as_str()) => false,
            Some(v) => {
                self.problem(var, format!("must be true or false (got {v:?})"));
                default
            }
        }
    }

    /// A URL with one of `schemes`. The value is never echoed: it may hold a password.
    fn url(&mut self, var: &str, default: &str, schemes: &[&str]) -> String {
        let value = self.string(var, default);
        match url::Url::parse(&value) {
            Ok(u) if schemes.contains(&u.scheme()) && u.has_host() => {}
            Ok(_) | Err(_) => self.problem(
                var,
                format!(
                    "must be a {} URL",
                    schemes
                        .iter()
                        .map(|s| format!("{s}://"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ),
        }
        value
    }
}

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/trellis";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const LOCAL_PROJECT_ID: &str = "trellis-local";
/// Where local mode keeps its dev-token secret when `DEV_TOKEN_SECRET` is
/// unset: random, made on first use, private to this checkout (so no
/// well-known secret ever signs tokens a reachable server accepts).
pub const LOCAL_DEV_TOKEN_SECRET_FILE: &str = "var/dev-token-secret";
const LOCAL_CURSOR_SECRET: &str = "trellis-local-cursor-secret";
const GOOGLE_X509_URL: &str =
    "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com";

fn default_instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "trellis".into());
    format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

impl Settings {
    /// Reads the process environment (after loading `.env` if present).
    pub fn from_env() -> Result<Self, SettingsError> {
        // A missing .env is normal; a malformed one is reported by dotenvy.
        if let Err(e) = dotenvy::dotenv()
            && !e.not_found()
        {
            return Err(SettingsError {
                problems: vec![(".env".into(), format!("cannot be read: {e}"))],
            });
        }
        let mut settings = Self::from_lookup(&|var| std::env::var(var).ok())?;
        if settings.env == AppEnv::Local && settings.dev_token_secret.is_none() {
            let path = std::path::Path::new(LOCAL_DEV_TOKEN_SECRET_FILE);
            settings.dev_token_secret =
                Some(checkout_dev_token_secret(path).map_err(|e| SettingsError {
                    problems: vec![(
                        "DEV_TOKEN_SECRET".into(),
                        format!("is not set and {} cannot be made: {e}", path.display()),
                    )],
                })?);
        }
        Ok(settings)
    }

    /// Reads settings through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let mut r = Reader {
            lookup,
            problems: Vec::new(),
        };
        let env = match r.string("APP_ENV", "local").to_ascii_lowercase().as_str() {
            "local" | "development" | "dev" => AppEnv::Local,
            "production" | "prod" => AppEnv::Production,
            other => {
                r.problem(
                    "APP_ENV",
                    format!("must be local or production (got {other:?})"),
                );
                AppEnv::Local
            }
        };
        let local = env == AppEnv::Local;

        let http_host = r.string("HTTP_HOST", "0.0.0.0");
        let http_port = r.parsed("HTTP_PORT", 8080_u16, "a port number 0-65535");
        let database_url = r.url(
            "DATABASE_URL",
            DEFAULT_DATABASE_URL,
            &["postgres", "postgresql"],
        );
        let database_max_connections =
            r.ranged("DATABASE_MAX_CONNECTIONS", 16_usize, 1, 1000, "connections");
        let redis_url = r.url("REDIS_URL", DEFAULT_REDIS_URL, &["redis", "rediss"]);
        let redis_key_prefix = r.string("REDIS_KEY_PREFIX", "trellis:");

        let firebase_project_id = match r.raw("FIREBASE_PROJECT_ID") {
            Some(p) => p.trim().to_owned(),
            None if local => LOCAL_PROJECT_ID.to_owned(),
            None => {
                r.problem("FIREBASE_PROJECT_ID", "is required when APP_ENV=production");
                String::new()
            }
        };
        let firebase_auth_emulator_host = r.raw("FIREBASE_AUTH_EMULATOR_HOST");
        if firebase_auth_emulator_host.is_some() && !local {
            r.problem(
                "FIREBASE_AUTH_EMULATOR_HOST",
                "must not be set when APP_ENV=production (emulator tokens are unsigned)",
            );
        }
        // Keys fetched over plain HTTP could be swapped on the way: local only.
        let key_schemes: &[&str] = if local {
            &["https", "http"]
        } else {
            &["https"]
        };
        let firebase_keys_url = r.url("FIREBASE_KEYS_URL", GOOGLE_X509_URL, key_schemes);
        // Local mode with no secret set: `from_env` uses the checkout's own.
        let dev_token_secret = r.raw("DEV_TOKEN_SECRET").filter(|_| local);
        if let Some(secret) = &dev_token_secret
            && secret.len() < 16
        {
            r.problem("DEV_TOKEN_SECRET", "must be at least 16 characters");
        }

        let smtp_url = r.raw("SMTP_URL");
        if let Some(u) = &smtp_url
            && !url::Url::parse(u)
                .is_ok_and(|u| matches!(u.scheme(), "smtp" | "smtps") && u.has_host())
        {
            r.problem("SMTP_URL", "must be an smtp:// or smtps:// URL");
        }
        let mail_from = r.string("MAIL_FROM", "Trellis <no-reply@trellis.local>");
        if !mail_from.contains('@') {
            r.problem(
                "MAIL_FROM",
                format!(
                    "must be an address like \"Name <no-reply@example.com>\" (got {mail_from:?})"
                ),
            );
        }
        let mail_outbox_dir = PathBuf::from(r.string("MAIL_OUTBOX_DIR", "var/mail"));
        let google_application_credentials =
            r.raw("GOOGLE_APPLICATION_CREDENTIALS").map(PathBuf::from);
        // The service-account assertion and every push travel to these:
        // over plain HTTP they could be read or answered by anyone on the
        // way, so production takes https only (like FIREBASE_KEYS_URL).
        let fcm_base_url = r.url("FCM_BASE_URL", "https://fcm.googleapis.com", key_schemes);
        let fcm_token_url = r
            .raw("FCM_TOKEN_URL")
            .map(|_| r.url("FCM_TOKEN_URL", "", key_schemes));
        let fcm_project_id = r.raw("FCM_PROJECT_ID").map(|p| p.trim().to_owned());

        if let Some(filter) = r.raw("RUST_LOG")
            && tracing_subscriber::EnvFilter::try_new(&filter).is_err()
        {
            r.problem(
                "RUST_LOG",
                format!(
                    "is not a log filter like \"info\" or \"info,http_api=debug\" (got {filter:?})"
                ),
            );
        }
        let log_format = match r
            .string("LOG_FORMAT", "pretty")
            .to_ascii_lowercase()
            .as_str()
        {
            "pretty" | "text" => LogFormat::Pretty,
            "json" => LogFormat::Json,
            other => {
                r.problem(
                    "LOG_FORMAT",
                    format!("must be pretty or json (got {other:?})"),
                );
                LogFormat::Pretty
            }
        };
        let shutdown_timeout =
            Duration::from_secs(r.ranged("SHUTDOWN_TIMEOUT_SECS", 20_u64, 0, 3600, "seconds"));
        let shutdown_drain =
            Duration::from_millis(r.ranged("SHUTDOWN_DRAIN_MS", 0_u64, 0, 60_000, "milliseconds"));
        let migrate_on_start = r.bool("MIGRATE_ON_START", local);
        let cors_allowed_origins = r
            .raw("CORS_ALLOWED_ORIGINS")
            .map(|v| match parse_origins(&v) {
                Ok(origins) => origins,
                Err(e) => {
                    r.problem("CORS_ALLOWED_ORIGINS", e);
                    Vec::new()
                }
            })
            .unwrap_or_default();
        let http_json_limit_bytes = r.ranged(
            "HTTP_JSON_LIMIT_BYTES",
            64 * 1024_usize,
            1024,
            64 * 1024 * 1024,
            "bytes",
        );
        let cursor_secret = match r.raw("CURSOR_SECRET") {
            Some(s) if s.len() >= 16 => s,
            Some(_) => {
                r.problem("CURSOR_SECRET", "must be at least 16 characters");
                String::new()
            }
            None if local => LOCAL_CURSOR_SECRET.to_owned(),
            None => {
                r.problem(
                    "CURSOR_SECRET",
                    "is required when APP_ENV=production (signs pagination cursors)",
                );
                String::new()
            }
        };
        let instance_id = r
            .raw("INSTANCE_ID")
            .or_else(|| r.raw("POD_NAME"))
            .unwrap_or_else(default_instance_id);

        let worker_concurrency = r.ranged("WORKER_CONCURRENCY", 16_usize, 1, 4096, "jobs");
        let worker_queues = parse_queues(&r.string("WORKER_QUEUES", "mail:3,push:3,default:1"))
            .unwrap_or_else(|e| {
                r.problem("WORKER_QUEUES", e);
                Vec::new()
            });
        let job_lease = Duration::from_secs(r.ranged("JOB_LEASE_SECS", 30_u64, 1, 3600, "seconds"));
        let job_retry_base = Duration::from_millis(r.ranged(
            "JOB_RETRY_BASE_MS",
            2000_u64,
            1,
            3_600_000,
            "milliseconds",
        ));
        let stream_claim_idle = Duration::from_millis(r.ranged(
            "STREAM_CLAIM_IDLE_MS",
            30_000_u64,
            100,
            86_400_000,
            "milliseconds",
        ));
        let stream_max_len = r.ranged("STREAM_MAX_LEN", 100_000_u64, 100, 1_000_000_000, "entries");
        let ws_max_message_bytes = r.ranged(
            "WS_MAX_MESSAGE_BYTES",
            64 * 1024_usize,
            1024,
            16 * 1024 * 1024,
            "bytes",
        );
        let ws_outbound_queue = r.ranged("WS_OUTBOUND_QUEUE", 256_usize, 1, 65_536, "messages");
        let ws_ping_interval =
            Duration::from_secs(r.ranged("WS_PING_INTERVAL_SECS", 15_u64, 1, 3600, "seconds"));
        let ws_idle_timeout =
            Duration::from_secs(r.ranged("WS_IDLE_TIMEOUT_SECS", 45_u64, 2, 86_400, "seconds"));
        if ws_idle_timeout <= ws_ping_interval {
            r.problem(
                "WS_IDLE_TIMEOUT_SECS",
                "must be longer than WS_PING_INTERVAL_SECS (or every socket times out)",
            );
        }
        let ws_handler_concurrency =
            r.ranged("WS_HANDLER_CONCURRENCY", 64_usize, 1, 65_536, "calls");
        let ws_max_connections_per_user = r.ranged(
            "WS_MAX_CONNECTIONS_PER_USER",
            16_usize,
            0,
            1_000_000,
            "sockets (0: no limit)",
        );
        let rate_limit_per_user = r.parsed("RATE_LIMIT_PER_USER", 600_u32, "a number of requests");
        let rate_limit_per_ip = r.parsed("RATE_LIMIT_PER_IP", 300_u32, "a number of requests");
        let rate_limit_window =
            Duration::from_secs(r.ranged("RATE_LIMIT_WINDOW_SECS", 60_u64, 1, 86_400, "seconds"));
        let trusted_proxies = match r.raw("TRUST_FORWARDED_FOR") {
            None => Vec::new(),
            Some(v)
                if ["0", "false", "no", "off"]
                    .contains(&v.trim().to_ascii_lowercase().as_str()) =>
            {
                Vec::new()
            }
            Some(v) => parse_proxies(&v).unwrap_or_else(|e| {
                r.problem("TRUST_FORWARDED_FOR", e);
                Vec::new()
            }),
        };
        let metrics_addr = r.raw("METRICS_ADDR").and_then(|v| {
            v.trim()
                .parse::<std::net::SocketAddr>()
                .map_err(|_| {
                    r.problem(
                        "METRICS_ADDR",
                        format!("must be an address and port like 0.0.0.0:9090 (got {v:?})"),
                    );
                })
                .ok()
        });

        if !r.problems.is_empty() {
            return Err(SettingsError {
                problems: r.problems,
            });
        }
        Ok(Self {
            env,
            http_host,
            http_port,
            database_url,
            database_max_connections,
            redis_url,
            redis_key_prefix,
            firebase_project_id,
            firebase_auth_emulator_host,
            firebase_keys_url,
            dev_token_secret,
            smtp_url,
            mail_from,
            mail_outbox_dir,
            google_application_credentials,
            fcm_base_url,
            fcm_token_url,
            fcm_project_id,
            log_format,
            shutdown_timeout,
            shutdown_drain,
            migrate_on_start,
            cors_allowed_origins,
            http_json_limit_bytes,
            cursor_secret,
            instance_id,
            worker_concurrency,
            worker_queues,
            job_lease,
            job_retry_base,
            stream_claim_idle,
            stream_max_len,
            ws_max_message_bytes,
            ws_outbound_queue,
            ws_ping_interval,
            ws_idle_timeout,
            ws_handler_concurrency,
            ws_max_connections_per_user,
            rate_limit_per_user,
            rate_limit_per_ip,
            rate_limit_window,
            trusted_proxies,
            metrics_addr,
        })
    }
}

/// The proxies' addresses as CIDRs, comma-separated (`10.0.0.0/8, fd00::/8`).
/// `true` is refused with a hint: trusting any peer lets every client name
/// its own address.
fn parse_proxies(raw: &str) -> Result<Vec<http_api::Cidr>, String> {
    if ["1", "true", "yes", "on"].contains(&raw.trim().to_ascii_lowercase().as_str()) {
        return Err(
            "takes the addresses of the proxies in front of the app as CIDRs (e.g. 10.0.0.0/8), not true: only their X-Forwarded-For is believed"
                .into(),
        );
    }
    let proxies: Result<Vec<_>, String> = raw
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(http_api::Cidr::parse)
        .collect();
    let proxies = proxies?;
    if proxies.is_empty() {
        return Err("lists no proxy".into());
    }
    Ok(proxies)
}

/// `*`, or a comma-separated list of origins (`https://app.example.com`,
/// `http://localhost:3000`): a scheme, a host and maybe a port, nothing more.
fn parse_origins(raw: &str) -> Result<Vec<String>, String> {
    let items: Vec<&str> = raw
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .collect();
    if items.contains(&"*") {
        return if items.len() == 1 {
            Ok(vec!["*".into()])
        } else {
            Err("must be * alone or a list of origins, not both".into())
        };
    }
    items
        .into_iter()
        .map(|o| {
            let origin = url::Url::parse(o)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
                .map(|u| u.origin().ascii_serialization());
            match origin {
                Some(origin) if origin == o.trim_end_matches('/') => Ok(origin),
                _ => Err(format!(
                    "{o:?} is not an origin like https://app.example.com (scheme, host, optional port)"
                )),
            }
        })
        .collect()
}

/// Reads the checkout's dev-token secret at `path`, making a random one on
/// first use (readable by its owner only).
pub fn checkout_dev_token_secret(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Write as _;
    let read = || {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| s.len() >= 32)
    };
    if let Some(existing) = read() {
        return Ok(existing);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(&tmp)?.write_all(secret.as_bytes())?;
    }
    // Linking fails if the file exists: two processes starting at once
    // both end up with whichever secret was linked first.
    let linked = std::fs::hard_link(&tmp, path);
    if linked.is_ok() {
        let _ = std::fs::remove_file(&tmp);
        return Ok(secret);
    }
    if let Some(existing) = read() {
        let _ = std::fs::remove_file(&tmp);
        return Ok(existing);
    }
    // A file too short to be a secret (hand-edited, truncated): replace it.
    std::fs::rename(&tmp, path)?;
    Ok(secret)
}

/// `mail:3,default:1` -> `[("mail", 3), ("default", 1)]` (weight 1 if left out).
fn parse_queues(raw: &str) -> Result<Vec<(String, u32)>, String> {
    let mut out = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, weight) = item.split_once(':').unwrap_or((item, "1"));
        let weight: u32 = weight
            .trim()
            .parse()
            .map_err(|_| format!("weight of {name:?} must be a number"))?;
        let valid = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !valid || weight == 0 {
            return Err(format!(
                "{item:?} must be name:weight with a lowercase name and a weight of at least 1"
            ));
        }
        out.push((name.to_owned(), weight));
    }
    if out.is_empty() {
        return Err("must name at least one queue".into());
    }
    Ok(out)
}

/// Every variable the app reads, for documentation and for the deploy-file
/// check (a variable a manifest sets must be one of these).
pub const KNOWN_VARIABLES: &[&str] = &[
    "APP_ENV",
    "HTTP_HOST",
    "HTTP_PORT",
    "DATABASE_URL",
    "DATABASE_MAX_CONNECTIONS",
    "REDIS_URL",
    "REDIS_KEY_PREFIX",
    "FIREBASE_PROJECT_ID",
    "FIREBASE_AUTH_EMULATOR_HOST",
    "FIREBASE_KEYS_URL",
    "DEV_TOKEN_SECRET",
    "SMTP_URL",
    "MAIL_FROM",
    "MAIL_OUTBOX_DIR",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "FCM_PROJECT_ID",
    "FCM_BASE_URL",
    "FCM_TOKEN_URL",
    "LOG_FORMAT",
    "RUST_LOG",
    "SHUTDOWN_TIMEOUT_SECS",
    "SHUTDOWN_DRAIN_MS",
    "MIGRATE_ON_START",
    "CORS_ALLOWED_ORIGINS",
    "HTTP_JSON_LIMIT_BYTES",
    "CURSOR_SECRET",
    "INSTANCE_ID",
    "POD_NAME",
    "WORKER_CONCURRENCY",
    "WORKER_QUEUES",
    "JOB_LEASE_SECS",
    "JOB_RETRY_BASE_MS",
    "STREAM_CLAIM_IDLE_MS",
    "STREAM_MAX_LEN",
    "WS_MAX_MESSAGE_BYTES",
    "WS_OUTBOUND_QUEUE",
    "WS_PING_INTERVAL_SECS",
    "WS_IDLE_TIMEOUT_SECS",
    "WS_HANDLER_CONCURRENCY",
    "WS_MAX_CONNECTIONS_PER_USER",
    "RATE_LIMIT_PER_USER",
    "RATE_LIMIT_PER_IP",
    "RATE_LIMIT_WINDOW_SECS",
    "TRUST_FORWARDED_FOR",
    "METRICS_ADDR",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        Settings::from_lookup(&move |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_work_out_of_the_box_locally() {
        let s = load(&[]).unwrap();
        assert_eq!(s.env, AppEnv::Local);
        assert_eq!(s.http_port, 8080);
        assert_eq!(s.database_url, DEFAULT_DATABASE_URL);
        assert!(s.migrate_on_start);
        // No well-known secret: `from_env` takes the checkout's own file.
        assert!(s.dev_token_secret.is_none());
        assert_eq!(s.firebase_project_id, LOCAL_PROJECT_ID);
    }

    #[test]
    fn every_problem_is_reported_at_once_without_echoing_urls() {
        let err = load(&[
            ("DATABASE_URL", "nonsense"),
            ("HTTP_PORT", "eighty"),
            ("REDIS_URL", "http://secret:pw@x"),
            ("LOG_FORMAT", "xml"),
        ])
        .unwrap_err();
        let vars: Vec<&str> = err.problems.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(
            vars,
            ["HTTP_PORT", "DATABASE_URL", "REDIS_URL", "LOG_FORMAT"]
        );
        let text = err.to_string();
        assert!(text.contains("DATABASE_URL: must be a postgres:// or postgresql:// URL"));
        assert!(
            !text.contains("secret:pw"),
            "URLs may hold passwords and are never echoed"
        );
        assert!(text.starts_with("invalid configuration (4 problems)"));
    }

    #[test]
    fn production_requires_a_project_and_refuses_the_emulator() {
        let err = load(&[
            ("APP_ENV", "production"),
            ("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9099"),
        ])
        .unwrap_err();
        let vars: Vec<&str> = err.problems.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(
            vars,
            [
                "FIREBASE_PROJECT_ID",
                "FIREBASE_AUTH_EMULATOR_HOST",
                "CURSOR_SECRET"
            ]
        );
        let ok = load(&[
            ("APP_ENV", "production"),
            ("FIREBASE_PROJECT_ID", "my-app"),
            ("CURSOR_SECRET", "0123456789abcdef0123"),
        ])
        .unwrap();
        assert!(ok.dev_token_secret.is_none(), "no dev tokens in production");
        assert!(!ok.migrate_on_start);
    }

    #[test]
    fn out_of_range_numbers_are_reported_not_clamped() {
        let err = load(&[
            ("JOB_LEASE_SECS", "0"),
            ("HTTP_JSON_LIMIT_BYTES", "0"),
            ("WS_PING_INTERVAL_SECS", "60"),
            ("WORKER_CONCURRENCY", "0"),
        ])
        .unwrap_err();
        let vars: Vec<&str> = err.problems.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(
            vars,
            [
                "HTTP_JSON_LIMIT_BYTES",
                "WORKER_CONCURRENCY",
                "JOB_LEASE_SECS",
                "WS_IDLE_TIMEOUT_SECS"
            ]
        );
        assert!(
            err.to_string()
                .contains("JOB_LEASE_SECS: must be a number of seconds from 1 to 3600 (got 0)"),
            "{err}"
        );
    }

    #[test]
    fn a_log_filter_that_does_not_parse_is_reported() {
        let err = load(&[("RUST_LOG", "info,=debug=x")]).unwrap_err();
        assert_eq!(err.problems[0].0, "RUST_LOG");
        assert!(load(&[("RUST_LOG", "info,http_api=debug")]).is_ok());
    }

    #[test]
    fn cors_origins_are_checked() {
        let s = load(&[(
            "CORS_ALLOWED_ORIGINS",
            "https://app.example.com, http://localhost:3000/",
        )])
        .unwrap();
        assert_eq!(
            s.cors_allowed_origins,
            ["https://app.example.com", "http://localhost:3000"]
        );
        assert_eq!(
            load(&[("CORS_ALLOWED_ORIGINS", "*")])
                .unwrap()
                .cors_allowed_origins,
            ["*"]
        );
        for bad in [
            "*,https://a.example",
            "app.example.com",
            "https://a.example/path",
            "ftp://x",
        ] {
            let err = load(&[("CORS_ALLOWED_ORIGINS", bad)]).unwrap_err();
            assert_eq!(err.problems[0].0, "CORS_ALLOWED_ORIGINS", "{bad:?}");
        }
    }

    #[test]
    fn production_fetches_token_keys_over_https_only() {
        let prod = [
            ("APP_ENV", "production"),
            ("FIREBASE_PROJECT_ID", "my-app"),
            ("CURSOR_SECRET", "0123456789abcdef0123"),
            ("FIREBASE_KEYS_URL", "http://keys.example/x509"),
        ];
        let err = load(&prod).unwrap_err();
        assert_eq!(err.problems[0].0, "FIREBASE_KEYS_URL");
        assert!(load(&[("FIREBASE_KEYS_URL", "http://127.0.0.1:9/keys")]).is_ok());
    }

    #[test]
    fn production_talks_to_fcm_over_https_only() {
        let prod = [
            ("APP_ENV", "production"),
            ("FIREBASE_PROJECT_ID", "my-app"),
            ("CURSOR_SECRET", "0123456789abcdef0123"),
            ("FCM_BASE_URL", "http://fcm.example"),
            ("FCM_TOKEN_URL", "http://oauth.example/token"),
        ];
        let err = load(&prod).unwrap_err();
        let vars: Vec<&str> = err.problems.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(vars, ["FCM_BASE_URL", "FCM_TOKEN_URL"]);
        let https = [
            ("APP_ENV", "production"),
            ("FIREBASE_PROJECT_ID", "my-app"),
            ("CURSOR_SECRET", "0123456789abcdef0123"),
            ("FCM_BASE_URL", "https://fcm.example"),
            ("FCM_TOKEN_URL", "https://oauth.example/token"),
        ];
        assert!(load(&https).is_ok());
        let local = [
            ("FCM_BASE_URL", "http://127.0.0.1:9"),
            ("FCM_TOKEN_URL", "http://127.0.0.1:9/token"),
        ];
        assert!(
            load(&local).is_ok(),
            "local mode may use a local FCM stand-in"
        );
    }

    #[test]
    fn the_checkout_dev_secret_is_random_private_and_kept() {
        let dir = std::env::temp_dir().join(format!("trellis-secret-{}", uuid::Uuid::new_v4()));
        let path = dir.join("var").join("dev-token-secret");
        let first = checkout_dev_token_secret(&path).unwrap();
        assert!(first.len() >= 32);
        assert_eq!(checkout_dev_token_secret(&path).unwrap(), first, "kept");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "readable by its owner only");
        }
        let other = dir.join("other");
        assert_ne!(checkout_dev_token_secret(&other).unwrap(), first, "random");
        std::fs::write(&path, "short").unwrap();
        let replaced = checkout_dev_token_secret(&path).unwrap();
        assert!(replaced.len() >= 32 && replaced != first);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_variable_read_is_a_known_one_and_every_known_one_is_read() {
        let asked = std::cell::RefCell::new(std::collections::BTreeSet::new());
        for env in ["local", "production"] {
            let _ = Settings::from_lookup(&|k| {
                asked.borrow_mut().insert(k.to_owned());
                match k {
                    "APP_ENV" => Some(env.to_owned()),
                    // Optional values are read only when set.
                    "FCM_TOKEN_URL" => Some("https://oauth2.example/token".to_owned()),
                    _ => None,
                }
            });
        }
        let asked: Vec<String> = asked.into_inner().into_iter().collect();
        let mut known: Vec<String> = KNOWN_VARIABLES.iter().map(|v| (*v).to_owned()).collect();
        known.sort();
        assert_eq!(asked, known);
    }

    #[test]
    fn forwarded_for_is_trusted_from_listed_proxies_only() {
        let s = load(&[("TRUST_FORWARDED_FOR", "10.0.0.0/8, fd00::/8")]).unwrap();
        assert_eq!(
            s.trusted_proxies
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["10.0.0.0/8", "fd00::/8"]
        );
        assert!(
            load(&[("TRUST_FORWARDED_FOR", "false")])
                .unwrap()
                .trusted_proxies
                .is_empty()
        );
        assert!(load(&[]).unwrap().trusted_proxies.is_empty());
        for bad in ["true", "10.0.0.1/8", "ten", ","] {
            let err = load(&[("TRUST_FORWARDED_FOR", bad)]).unwrap_err();
            assert_eq!(err.problems[0].0, "TRUST_FORWARDED_FOR", "{bad:?}");
        }
    }

    #[test]
    fn metrics_can_have_a_listener_of_their_own() {
        assert_eq!(load(&[]).unwrap().metrics_addr, None);
        let s = load(&[("METRICS_ADDR", "0.0.0.0:9090")]).unwrap();
        assert_eq!(s.metrics_addr, Some("0.0.0.0:9090".parse().unwrap()));
        let err = load(&[("METRICS_ADDR", "9090")]).unwrap_err();
        assert_eq!(err.problems[0].0, "METRICS_ADDR");
    }

    #[test]
    fn worker_queues_parse_with_weights() {
        assert_eq!(
            load(&[]).unwrap().worker_queues,
            [
                ("mail".to_owned(), 3),
                ("push".to_owned(), 3),
                ("default".to_owned(), 1)
            ]
        );
        assert_eq!(
            load(&[("WORKER_QUEUES", "a, b:5")]).unwrap().worker_queues,
            [("a".to_owned(), 1), ("b".to_owned(), 5)]
        );
        for bad in [",", "A:1", "x:0", "x:many"] {
            let err = load(&[("WORKER_QUEUES", bad)]).unwrap_err();
            assert_eq!(err.problems[0].0, "WORKER_QUEUES", "{bad:?}");
        }
    }

    #[test]
    fn the_instance_id_comes_from_the_pod_name() {
        assert_eq!(
            load(&[("POD_NAME", "api-7f9c")]).unwrap().instance_id,
            "api-7f9c"
        );
        assert_ne!(
            load(&[]).unwrap().instance_id,
            load(&[]).unwrap().instance_id
        );
    }
}

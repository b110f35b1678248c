//! Longer than 450 lines: the settings' tests, one or more per variable and
//! its refusals; they share one loader and read best as one list.

use super::*;
use secrecy::ExposeSecret as _;
use std::collections::HashMap;

/// Settings from `vars`, in local mode unless they say otherwise.
fn load(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    let mut map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    map.entry("APP_ENV".into())
        .or_insert_with(|| "local".into());
    Settings::from_lookup(&move |k| map.get(k).cloned())
}

#[test]
fn a_process_whose_app_env_was_forgotten_is_production_and_opens_nothing() {
    let err = Settings::from_lookup(&|_| None).unwrap_err();
    let vars: Vec<&str> = err.problems.iter().map(|(v, _)| v.as_str()).collect();
    assert!(vars.contains(&"FIREBASE_PROJECT_ID"), "{vars:?}");
    assert!(vars.contains(&"CURSOR_SECRET"), "{vars:?}");
    assert!(
        err.to_string()
            .contains("APP_ENV: is not set, so production's rules apply"),
        "{err}"
    );
    let s = Settings::from_lookup(&|k| match k {
        "FIREBASE_PROJECT_ID" => Some("p".into()),
        "CURSOR_SECRET" => Some("0123456789abcdef0123".into()),
        "DEV_TOKEN_SECRET" => Some("a-dev-secret-of-some-length".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(s.env, AppEnv::Production);
    assert!(s.auth.dev_token_secret.is_none(), "no dev tokens");
    assert!(s.ops.access.is_none(), "no ops console without a password");
    assert!(!s.migrate_on_start);
    // With the mode forgotten, dev tokens are refused even where the
    // settings were built by hand with a secret.
    assert!(s.auth.auth_settings(s.env).dev_secret.is_none());
}

#[test]
fn local_mode_signs_with_no_constant() {
    let (a, b) = (load(&[]).unwrap(), load(&[]).unwrap());
    let (a, b) = (
        a.http.cursor_secret.expose_secret(),
        b.http.cursor_secret.expose_secret(),
    );
    assert!(a.len() >= 32);
    assert_ne!(a, b, "random");
    assert_ne!(a, "trellis-local-cursor-secret");
}

#[test]
fn defaults_work_out_of_the_box_locally() {
    let s = load(&[]).unwrap();
    assert_eq!(s.env, AppEnv::Local);
    assert_eq!(s.http.port, 8080);
    assert_eq!(s.database.url.expose_secret(), DEFAULT_DATABASE_URL);
    assert!(s.migrate_on_start);
    // No well-known secret: `from_env` takes the checkout's own file.
    assert!(s.auth.dev_token_secret.is_none());
    assert_eq!(s.auth.firebase_project_id, LOCAL_PROJECT_ID);
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
fn a_redis_cluster_url_is_taken_and_a_malformed_one_refused() {
    let s = load(&[(
        "REDIS_URL",
        "redis-cluster://:pw@127.0.0.1:7001?node=127.0.0.1:7002&node=127.0.0.1:7003",
    )])
    .unwrap();
    assert!(s.redis.url.expose_secret().starts_with("redis-cluster://"));
    let err = load(&[("REDIS_URL", "redis-cluster://127.0.0.1:7001?nodes=x:1")]).unwrap_err();
    let vars: Vec<&str> = err.problems.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(vars, ["REDIS_URL"]);
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
            "CURSOR_SECRET",
            "FIREBASE_PROJECT_ID",
            "FIREBASE_AUTH_EMULATOR_HOST"
        ]
    );
    let ok = load(&[
        ("APP_ENV", "production"),
        ("FIREBASE_PROJECT_ID", "my-app"),
        ("CURSOR_SECRET", "0123456789abcdef0123"),
    ])
    .unwrap();
    assert!(
        ok.auth.dev_token_secret.is_none(),
        "no dev tokens in production"
    );
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
        s.http.cors_allowed_origins,
        ["https://app.example.com", "http://localhost:3000"]
    );
    assert_eq!(
        load(&[("CORS_ALLOWED_ORIGINS", "*")])
            .unwrap()
            .http
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
    let first = checkout_secret(&path).unwrap();
    assert!(first.len() >= 32);
    assert_eq!(checkout_secret(&path).unwrap(), first, "kept");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "readable by its owner only");
    }
    let other = dir.join("other");
    assert_ne!(checkout_secret(&other).unwrap(), first, "random");
    std::fs::write(&path, "short").unwrap();
    let replaced = checkout_secret(&path).unwrap();
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
        s.rate_limit
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["10.0.0.0/8", "fd00::/8"]
    );
    assert!(
        load(&[("TRUST_FORWARDED_FOR", "false")])
            .unwrap()
            .rate_limit
            .trusted_proxies
            .is_empty()
    );
    assert!(load(&[]).unwrap().rate_limit.trusted_proxies.is_empty());
    for bad in ["true", "10.0.0.1/8", "ten", ","] {
        let err = load(&[("TRUST_FORWARDED_FOR", bad)]).unwrap_err();
        assert_eq!(err.problems[0].0, "TRUST_FORWARDED_FOR", "{bad:?}");
    }
}

#[test]
fn metrics_can_have_a_listener_of_their_own() {
    assert_eq!(load(&[]).unwrap().http.metrics_addr, None);
    let s = load(&[("METRICS_ADDR", "0.0.0.0:9090")]).unwrap();
    assert_eq!(s.http.metrics_addr, Some("0.0.0.0:9090".parse().unwrap()));
    let err = load(&[("METRICS_ADDR", "9090")]).unwrap_err();
    assert_eq!(err.problems[0].0, "METRICS_ADDR");
}

#[test]
fn worker_queues_parse_with_weights() {
    assert_eq!(
        load(&[]).unwrap().worker.queues,
        [
            ("mail".to_owned(), 3),
            ("push".to_owned(), 3),
            ("default".to_owned(), 1)
        ]
    );
    assert_eq!(
        load(&[("WORKER_QUEUES", "a, b:5")]).unwrap().worker.queues,
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

#[test]
fn the_ops_console_is_loopback_locally_off_in_production_and_signed_in_with_a_password() {
    assert!(matches!(
        load(&[]).unwrap().ops.access,
        Some(ops_console::Access::Loopback)
    ));
    let prod = [
        ("APP_ENV", "production"),
        ("FIREBASE_PROJECT_ID", "p"),
        (
            "CURSOR_SECRET",
            "a-cursor-secret-of-enough-length-0123456789",
        ),
    ];
    assert!(
        load(&prod).unwrap().ops.access.is_none(),
        "no password: not served"
    );

    let hash = ops_console::hash_password("correct horse battery").unwrap();
    let secret = "s".repeat(32);
    let mut with = prod.to_vec();
    with.extend([
        ("OPS_PASSWORD_HASH", hash.as_str()),
        ("OPS_SESSION_SECRET", secret.as_str()),
        ("OPS_ADDR", "127.0.0.1:9091"),
    ]);
    let s = load(&with).unwrap();
    match &s.ops.access {
        Some(ops_console::Access::SignIn(sign_in)) => {
            assert_eq!(sign_in.passwords.len(), 1);
            assert!(sign_in.secure_cookies, "Secure cookies in production");
        }
        other => panic!("expected sign-in, got {other:?}"),
    }
    assert_eq!(s.ops.addr, Some("127.0.0.1:9091".parse().unwrap()));
    assert!(!format!("{:?}", s.ops).contains("argon2"), "never printed");

    let mut bad = prod.to_vec();
    bad.extend([("OPS_PASSWORD_HASH", "hunter2"), ("OPS_ADDR", "9091")]);
    let err = load(&bad).unwrap_err();
    let vars: Vec<&str> = err.problems.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(vars, ["OPS_PASSWORD_HASH", "OPS_ADDR"]);
    let mut no_secret = prod.to_vec();
    no_secret.push(("OPS_PASSWORD_HASH", hash.as_str()));
    let err = load(&no_secret).unwrap_err();
    assert_eq!(err.problems[0].0, "OPS_SESSION_SECRET");
}

#[test]
fn a_bucket_needs_its_credentials_and_without_one_uploads_stay_local() {
    let s = load(&[]).unwrap();
    assert_eq!(s.storage.bucket, None);
    assert_eq!(s.storage.local_dir, std::path::PathBuf::from("var/storage"));
    assert_eq!(s.storage.region, "us-east-1");
    let err = load(&[("STORAGE_BUCKET", "uploads")]).unwrap_err();
    assert_eq!(err.problems[0].0, "STORAGE_BUCKET");
    let s = load(&[
        ("STORAGE_BUCKET", "uploads"),
        ("STORAGE_ENDPOINT", "https://acct.r2.cloudflarestorage.com"),
        ("STORAGE_REGION", "auto"),
        ("AWS_ACCESS_KEY_ID", "key"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
    ])
    .unwrap();
    let adapter = s.storage.storage_settings();
    assert_eq!(adapter.bucket.as_deref(), Some("uploads"));
    assert_eq!(adapter.region, "auto");
    assert!(
        !format!("{:?}", s.storage).contains("secret"),
        "never printed"
    );
    let err = load(&[("STORAGE_ENDPOINT", "ftp://x")]).unwrap_err();
    assert_eq!(err.problems[0].0, "STORAGE_ENDPOINT");
}

#[test]
fn a_direct_url_beside_the_database_url_means_a_transaction_pooler() {
    let plain = load(&[]).unwrap();
    assert!(!plain.database.through_pooler());
    assert_eq!(plain.database.session_url(), DEFAULT_DATABASE_URL);
    assert!(!plain.database.pg_settings().through_pooler);

    let pooled = load(&[
        (
            "DATABASE_URL",
            "postgres://app:pw@pooler.example:6543/db?sslmode=require",
        ),
        (
            "DATABASE_DIRECT_URL",
            "postgres://app:pw@db.example:5432/db?sslmode=require",
        ),
    ])
    .unwrap();
    assert!(pooled.database.through_pooler());
    assert_eq!(
        pooled.database.session_url(),
        "postgres://app:pw@db.example:5432/db?sslmode=require"
    );
    let pool = pooled.database.pool_settings(3);
    assert!(pool.through_pooler);
    assert_eq!(pool.max_connections, 3);
    assert!(pool.url.contains("pooler.example:6543"));

    let err = load(&[
        ("DATABASE_DIRECT_URL", "mysql://x"),
        ("DATABASE_URL", "postgres://h/db?sslmode=verify-everything"),
    ])
    .unwrap_err();
    let vars: Vec<&str> = err.problems.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(vars, ["DATABASE_DIRECT_URL", "DATABASE_URL"], "{err}");
    assert!(err.to_string().contains("sslmode"), "{err}");
}

#[test]
fn no_secret_is_ever_printed_by_debug() {
    let s = load(&[
        (
            "DATABASE_URL",
            "postgres://app:pg-password-1@db.example.com/app",
        ),
        (
            "DATABASE_DIRECT_URL",
            "postgres://app:pg-password-2@db.example.com/app",
        ),
        (
            "REDIS_URL",
            "redis://:redis-password-3@cache.example.com:6379",
        ),
        (
            "SMTP_URL",
            "smtp://mail:smtp-password-4@mail.example.com:587",
        ),
        ("CURSOR_SECRET", "cursor-secret-5-0123456789"),
        ("DEV_TOKEN_SECRET", "dev-token-secret-6-0123456789"),
    ])
    .unwrap();
    let printed = [
        format!("{s:?}"),
        format!("{:?}", s.database),
        format!("{:?}", s.redis),
        format!("{:?}", s.mail),
        format!("{:?}", s.http),
        format!("{:?}", s.auth),
    ];
    for text in &printed {
        for secret in [
            "pg-password-1",
            "pg-password-2",
            "redis-password-3",
            "smtp-password-4",
            "cursor-secret-5",
            "dev-token-secret-6",
        ] {
            assert!(!text.contains(secret), "{secret} printed in {text}");
        }
    }
    assert_eq!(
        s.mail.smtp_url.as_ref().map(|u| u.expose_secret().len()),
        Some(48)
    );
}

//! Scenarios 1, 2 and 7: the HTTP API against pgbench and a bare actix
//! server, and startup/idle memory of `app all`.

use crate::auth::{Keys, PROJECT};
use crate::report::Scenario;
use crate::tools::{self, Proc};
use std::time::Duration;

/// Settings for a benchmarked app: production mode, our key server, no
/// rate limits (they would throttle the load generator), logs at WARN.
pub(crate) fn app_env(
    db: &test_support::TestDb,
    redis: &test_support::TestRedis,
    keys: &Keys,
) -> Vec<(&'static str, String)> {
    vec![
        ("APP_ENV", "production".into()),
        ("DATABASE_URL", db.url().into()),
        ("DATABASE_MAX_CONNECTIONS", "16".into()),
        ("REDIS_URL", redis.url().into()),
        ("REDIS_KEY_PREFIX", redis.prefix().into()),
        ("FIREBASE_PROJECT_ID", PROJECT.into()),
        ("FIREBASE_KEYS_URL", keys.url.clone()),
        ("CURSOR_SECRET", "benchmark-cursor-secret-0123456789".into()),
        ("MIGRATE_ON_START", "false".into()),
        ("RATE_LIMIT_PER_USER", "0".into()),
        ("RATE_LIMIT_PER_IP", "0".into()),
        // Scenario 6 opens thousands of sockets as one user.
        ("WS_MAX_CONNECTIONS_PER_USER", "0".into()),
        ("LOG_FORMAT", "json".into()),
    ]
}

async fn patch(
    client: &reqwest::Client,
    app: &Proc,
    token: &str,
    body: serde_json::Value,
) -> anyhow::Result<u16> {
    Ok(client
        .patch(format!("http://127.0.0.1:{}/api/v1/me", app.port))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?
        .status()
        .as_u16())
}

pub(crate) async fn run(secs: u32, out: &mut Vec<Scenario>) -> anyhow::Result<()> {
    let keys = Keys::start().await?;
    let db = test_support::TestDb::new().await;
    let redis = test_support::TestRedis::new().await;
    let env = app_env(&db, &redis, &keys);
    let (app, _) = tools::start_app("serve", &env).await?;
    let client = reqwest::Client::new();

    // Scenario 1: GET /me with an RS256 token, vs pgbench -S and a bare actix server.
    let token = keys.token("bench-reader", Some("reader@example.com"), Some("Reader"))?;
    anyhow::ensure!(patch(&client, &app, &token, serde_json::json!({})).await? == 201);
    let auth = format!("Authorization: Bearer {token}");
    let pg_db = std::env::var("BENCH_PGBENCH_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/trellis_pgbench".into());
    ensure_pgbench_db(&pg_db)?;
    let secs_s = secs.to_string();
    // Three alternating rounds; medians, since a 2-core machine is noisy.
    let third = (secs / 3).max(1);
    let third_s = third.to_string();
    let (mut gets, mut pgs, mut p99s) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        pgs.push(tools::pgbench(
            &pg_db,
            &[
                "-S", "-M", "prepared", "-c", "64", "-j", "2", "-T", &third_s, "-n",
            ],
        )?);
        let (rps, p99) = tools::wrk(
            &format!("http://127.0.0.1:{}/api/v1/me", app.port),
            64,
            third,
            std::slice::from_ref(&auth),
            None,
        )?;
        gets.push(rps);
        p99s.push(p99);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (get_me, pgbench_s, get_me_p99) = (median(&mut gets), median(&mut pgs), median(&mut p99s));

    let hello = tools::start_self("--serve-hello").await?;
    let (bare, _) = tools::wrk(
        &format!("http://127.0.0.1:{}/", hello.port),
        64,
        secs,
        &[],
        None,
    )?;
    drop(hello);
    let (healthz, _) = tools::wrk(
        &format!("http://127.0.0.1:{}/healthz", app.port),
        64,
        secs,
        &[],
        None,
    )?;

    let mut s = Scenario::new("1. GET /api/v1/me");
    s.ratio(
        "GET /me (RS256 + Postgres read) vs pgbench -S -M prepared, 64 conns",
        get_me,
        pgbench_s,
        0.60,
        "req/s",
    );
    s.ratio(
        "static JSON through the full middleware vs bare actix",
        healthz,
        bare,
        0.60,
        "req/s",
    );
    s.figure("GET /me p99 ms", get_me_p99);
    s.notes.push(format!(
        "GET /me rounds {gets:.0?} req/s; pgbench -S rounds {pgs:.0?} tps (medians used)"
    ));
    out.push(s);

    // Scenario 2: PATCH /me on existing profiles (upsert + outbox row).
    let mut tokens = Vec::new();
    for i in 0..64 {
        let t = keys.token(
            &format!("bench-{i}"),
            Some(&format!("b{i}@example.com")),
            None,
        )?;
        anyhow::ensure!(patch(&client, &app, &t, serde_json::json!({})).await? == 201);
        tokens.push(t);
    }
    let script = std::env::temp_dir().join(format!("trellis-patch-{}.lua", std::process::id()));
    std::fs::write(&script, wrk_patch_script(&tokens))?;
    let (patch_rps, patch_p99) = tools::wrk(
        &format!("http://127.0.0.1:{}/api/v1/me", app.port),
        64,
        secs,
        &[],
        Some(&script),
    )?;
    let sql = std::env::temp_dir().join(format!("trellis-upsert-{}.sql", std::process::id()));
    std::fs::write(&sql, PGBENCH_UPSERT)?;
    let sql_arg = format!("-f{}", sql.display());
    let pg_upsert = tools::pgbench(
        db.url(),
        &[
            "-M", "prepared", "-c", "64", "-j", "2", "-T", &secs_s, "-n", &sql_arg,
        ],
    )?;
    let _ = std::fs::remove_file(&script);
    let _ = std::fs::remove_file(&sql);
    let mut s = Scenario::new("2. PATCH /api/v1/me");
    s.ratio(
        "PATCH /me (upsert + outbox row) vs the same SQL in pgbench, 64 conns",
        patch_rps,
        pg_upsert,
        0.50,
        "req/s",
    );
    s.figure("PATCH /me p99 ms", patch_p99);
    out.push(s);
    drop(app);

    // Scenario 7: startup to ready, and idle RSS of `app all`.
    let mut ready = Vec::new();
    let mut rss = 0;
    for _ in 0..3 {
        let (all, took) = tools::start_app("all", &env).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        rss = tools::rss_kib(all.child.id())?;
        ready.push(took.as_secs_f64());
        drop(all);
    }
    ready.sort_by(f64::total_cmp);
    let mut s = Scenario::new("7. app all");
    s.bound(
        "startup to /readyz 200 (median of 3)",
        ready[1],
        0.5,
        false,
        "s",
    );
    s.bound("idle RSS", rss as f64 / 1024.0, 30.0, false, "MiB");
    out.push(s);
    Ok(())
}

fn ensure_pgbench_db(url: &str) -> anyhow::Result<()> {
    let admin = url
        .rsplit_once('/')
        .map(|(base, _)| format!("{base}/postgres"))
        .unwrap_or_default();
    let name = url.rsplit('/').next().unwrap_or("trellis_pgbench");
    let exists = tools::run(std::process::Command::new("psql").args([
        &admin,
        "-Atc",
        &format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"),
    ]))?;
    if exists.trim() != "1" {
        tools::run(std::process::Command::new("psql").args([
            &admin,
            "-c",
            &format!("CREATE DATABASE {name}"),
        ]))?;
        tools::run(std::process::Command::new("pgbench").args(["-i", "-s", "1", "-q", url]))?;
    }
    Ok(())
}

/// The statements PATCH /me runs for an existing user whose name changes.
const PGBENCH_UPSERT: &str = "\\set n random(0, 63)
BEGIN;
INSERT INTO users (id, firebase_uid) VALUES (gen_random_uuid(), 'bench-' || :n) ON CONFLICT (firebase_uid) DO NOTHING RETURNING id;
SELECT id, firebase_uid, email, display_name, photo_url, created_at, updated_at FROM users WHERE firebase_uid = 'bench-' || :n FOR UPDATE;
UPDATE users SET display_name = 'pg ' || (random() * 1000000000)::bigint, updated_at = now() WHERE firebase_uid = 'bench-' || :n RETURNING id, firebase_uid, email, display_name, photo_url, created_at, updated_at;
INSERT INTO outbox (event_id, topic, event_type, payload) VALUES (gen_random_uuid(), 'users', 'user.profile_updated', '{}');
COMMIT;
";

/// A wrk script that PATCHes a new display name as one of 64 users in turn.
fn wrk_patch_script(tokens: &[String]) -> String {
    let list = tokens
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(",\n");
    format!(
        "local tokens = {{\n{list}\n}}
local n = 0
request = function()
  n = n + 1
  local t = tokens[(n % #tokens) + 1]
  local body = '{{\"display_name\":\"wrk ' .. n .. ' ' .. math.random(1000000) .. '\"}}'
  return wrk.format('PATCH', nil, {{['Authorization'] = 'Bearer ' .. t, ['Content-Type'] = 'application/json'}}, body)
end
"
    )
}

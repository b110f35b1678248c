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
        ("SSL_CERT_FILE", keys.ca_file()),
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

/// Distinct users for the uncached GET /me run: more than the verifier's
/// 10,000-entry token cache (`auth_adapter::VerifierSettings::cache_capacity`),
/// which empties itself when full of live tokens, so cycling through these
/// in order never finds one still cached.
const DISTINCT_USERS: usize = 12_000;

/// Users the PATCH load cycles through: 64 per wrk thread, twice its 32
/// connections, so two requests in flight never touch the same row.
const PATCH_USERS: usize = 128;

/// Postgres connections the benchmarked app holds (`DATABASE_MAX_CONNECTIONS`):
/// the most transactions it can have in flight, so the PATCH baseline runs
/// pgbench with as many clients.
const APP_PG_CONNECTIONS: u32 = 16;

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub(crate) async fn run(secs: u32, out: &mut Vec<Scenario>) -> anyhow::Result<()> {
    let keys = Keys::start().await?;
    let db = test_support::TestDb::new().await;
    let redis = test_support::TestRedis::new().await;
    let env = app_env(&db, &redis, &keys);
    let (app, _) = tools::start_app("serve", &env).await?;
    let client = tools::client(Duration::from_secs(10))?;
    let me_url = format!("http://127.0.0.1:{}/api/v1/me", app.port);

    // Scenario 1: GET /me with an RS256 token, vs pgbench -S and a bare actix server.
    let token = keys.token("bench-reader", Some("reader@example.com"), Some("Reader"))?;
    anyhow::ensure!(patch(&client, &app, &token, serde_json::json!({})).await? == 201);
    let auth = format!("Authorization: Bearer {token}");
    // The baseline runs on the server the app uses (TEST_DATABASE_URL's).
    let pg_db = std::env::var("BENCH_PGBENCH_URL").unwrap_or_else(|_| {
        let base = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let server = base.split('?').next().unwrap_or_default();
        server.rsplit_once('/').map_or_else(
            || "postgres://postgres@127.0.0.1:5432/trellis_pgbench".into(),
            |(s, _)| format!("{s}/trellis_pgbench"),
        )
    });
    ensure_pgbench_db(&pg_db)?;
    // Three alternating rounds; medians, since a 2-core machine is noisy.
    let third = (secs / 3).max(1);
    let third_s = third.to_string();
    let (mut gets, mut pgs, mut p99s) = (Vec::new(), Vec::new(), Vec::new());
    {
        let _perf = tools::Perf::attach(app.child.id(), "get-me-one-token");
        for _ in 0..3 {
            pgs.push(tools::pgbench(
                &pg_db,
                &[
                    "-S", "-M", "prepared", "-c", "64", "-j", "2", "-T", &third_s, "-n",
                ],
            )?);
            let (rps, p99) = tools::wrk(&me_url, 64, third, std::slice::from_ref(&auth), None)?;
            gets.push(rps);
            p99s.push(p99);
        }
    }
    let (get_me, pgbench_s, get_me_p99) = (median(&mut gets), median(&mut pgs), median(&mut p99s));

    // The same route with a different token on (nearly) every request: the
    // full RS256 verification each time, and a different row each time.
    let uids: Vec<(String, Option<String>)> = (0..DISTINCT_USERS)
        .map(|i| (format!("many-{i}"), None))
        .collect();
    tools::run(std::process::Command::new("psql").args([
        db.url(),
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        &format!(
            "INSERT INTO users (id, firebase_uid, email) SELECT gen_random_uuid(), 'many-' || g, 'many' || g || '@example.com' FROM generate_series(0, {}) g",
            DISTINCT_USERS - 1
        ),
    ]))?;
    let distinct_tokens = keys.tokens(&uids)?;
    let script = std::env::temp_dir().join(format!("trellis-get-{}.lua", std::process::id()));
    std::fs::write(&script, wrk_script("GET", &distinct_tokens, false))?;
    let (get_distinct, get_distinct_p99) = {
        let _perf = tools::Perf::attach(app.child.id(), "get-me-distinct-tokens");
        tools::wrk(&me_url, 64, secs, &[], Some(&script))?
    };
    let _ = std::fs::remove_file(&script);

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
        "GET /me, one token on all 64 conns (a verified-token cache hit on every request) + Postgres read, vs pgbench -S -M prepared, 64 conns",
        get_me,
        pgbench_s,
        0.60,
        "req/s",
    );
    s.ratio_reported(
        &format!(
            "GET /me, {DISTINCT_USERS} users each with its own token (more than the 10,000-entry cache: RS256 verified on every request), vs pgbench -S"
        ),
        get_distinct,
        pgbench_s,
        "req/s",
    );
    s.ratio(
        "static JSON through the full middleware vs bare actix",
        healthz,
        bare,
        0.60,
        "req/s",
    );
    s.figure("GET /me p99 ms (one token)", get_me_p99);
    s.figure(
        &format!("GET /me p99 ms ({DISTINCT_USERS} tokens)"),
        get_distinct_p99,
    );
    s.notes.push(format!(
        "GET /me rounds {gets:.0?} req/s; pgbench -S rounds {pgs:.0?} tps (medians used)"
    ));
    out.push(s);

    // Scenario 2: PATCH /me on existing profiles (upsert + outbox row).
    let uids: Vec<(String, Option<String>)> = (0..PATCH_USERS)
        .map(|i| (format!("bench-{i}"), Some(format!("b{i}@example.com"))))
        .collect();
    let tokens = keys.tokens(&uids)?;
    for t in &tokens {
        anyhow::ensure!(patch(&client, &app, t, serde_json::json!({})).await? == 201);
    }
    let script = std::env::temp_dir().join(format!("trellis-patch-{}.lua", std::process::id()));
    std::fs::write(&script, wrk_script("PATCH", &tokens, true))?;
    let sql = std::env::temp_dir().join(format!("trellis-upsert-{}.sql", std::process::id()));
    std::fs::write(&sql, PGBENCH_UPSERT)?;
    let sql_arg = format!("-f{}", sql.display());
    let pg_clients = APP_PG_CONNECTIONS.to_string();
    // Alternating rounds again: both sides append to the same outbox table,
    // so neither runs only against the smaller one.
    let (mut patches, mut patch_p99s, mut upserts, mut upserts_64) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    {
        let _perf = tools::Perf::attach(app.child.id(), "patch-me");
        for _ in 0..3 {
            upserts.push(tools::pgbench(
                db.url(),
                &[
                    "-M",
                    "prepared",
                    "-c",
                    &pg_clients,
                    "-j",
                    "2",
                    "-T",
                    &third_s,
                    "-n",
                    &sql_arg,
                ],
            )?);
            let (rps, p99) = tools::wrk(&me_url, 64, third, &[], Some(&script))?;
            patches.push(rps);
            patch_p99s.push(p99);
        }
    }
    upserts_64.push(tools::pgbench(
        db.url(),
        &[
            "-M", "prepared", "-c", "64", "-j", "2", "-T", &third_s, "-n", &sql_arg,
        ],
    )?);
    let _ = std::fs::remove_file(&script);
    let _ = std::fs::remove_file(&sql);
    let (patch_rps, patch_p99, pg_upsert) = (
        median(&mut patches),
        median(&mut patch_p99s),
        median(&mut upserts),
    );
    let mut s = Scenario::new("2. PATCH /api/v1/me");
    s.ratio(
        &format!(
            "PATCH /me (upsert + outbox row), 64 conns over {PATCH_USERS} users (no row shared in flight), vs the same SQL in pgbench, {APP_PG_CONNECTIONS} clients (the app's Postgres connections) each on its own row"
        ),
        patch_rps,
        pg_upsert,
        0.50,
        "req/s",
    );
    s.figure("PATCH /me p99 ms", patch_p99);
    s.figure(
        "pgbench upsert tps at 64 clients, each its own row",
        upserts_64[0],
    );
    s.notes.push(format!(
        "PATCH rounds {patches:.0?} req/s; pgbench upsert rounds ({APP_PG_CONNECTIONS} clients) {upserts:.0?} tps (medians used)"
    ));
    out.push(s);
    drop(app);

    // Scenario 7: startup to ready, and idle RSS of `app all`, on a fresh
    // database and key prefix (the earlier scenarios' outbox backlog would
    // keep its relay busy).
    let fresh_db = test_support::TestDb::new().await;
    let fresh_redis = test_support::TestRedis::new().await;
    let fresh = app_env(&fresh_db, &fresh_redis, &keys);
    let mut ready = Vec::new();
    let mut rss_samples = Vec::new();
    for _ in 0..3 {
        let (all, took) = tools::start_app("all", &fresh).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        rss_samples.push(tools::rss_kib(all.child.id())?);
        ready.push(took.as_secs_f64());
        drop(all);
    }
    ready.sort_by(f64::total_cmp);
    rss_samples.sort_unstable();
    let rss = rss_samples[1];
    let mut s = Scenario::new("7. app all");
    s.bound(
        "startup to /readyz 200 (median of 3)",
        ready[1],
        0.5,
        false,
        "s",
    );
    s.bound(
        "idle RSS (median of 3)",
        rss as f64 / 1024.0,
        30.0,
        false,
        "MiB",
    );
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

/// The statements PATCH /me runs for an existing user whose name changes
/// (`postgres_adapter::users::upsert_once`): the insert that finds the row,
/// the row lock, the update, and the `user.profile_updated` outbox row with a
/// payload of the app's size. Each pgbench client updates its own row
/// (`bench-<client_id>`), as the app's load never has two requests in flight
/// on one row: no lock waits on either side.
const PGBENCH_UPSERT: &str = "BEGIN;
INSERT INTO users (id, firebase_uid, email, display_name, photo_url) VALUES (gen_random_uuid(), 'bench-' || :client_id, NULL, NULL, NULL) ON CONFLICT (firebase_uid) DO NOTHING RETURNING id, firebase_uid, email, display_name, photo_url, created_at, updated_at;
SELECT id, firebase_uid, email, display_name, photo_url, created_at, updated_at FROM users WHERE firebase_uid = 'bench-' || :client_id FOR UPDATE;
UPDATE users SET email = 'b' || :client_id || '@example.com', display_name = 'pg ' || (random() * 1000000000)::bigint, photo_url = NULL, updated_at = now() WHERE firebase_uid = 'bench-' || :client_id RETURNING id, firebase_uid, email, display_name, photo_url, created_at, updated_at;
INSERT INTO outbox (event_id, topic, event_type, payload) VALUES (gen_random_uuid(), 'users', 'user.profile_updated', '{\"v\": 1, \"user_id\": \"0190c5a8-7d5e-7c3a-9d8e-6f1a2b3c4d5e\", \"uid\": \"bench-0\", \"email\": \"b0@example.com\", \"display_name\": \"pg 123456789\", \"photo_url\": null}');
COMMIT;
";

/// A wrk script: `method` /api/v1/me, each of wrk's two threads cycling
/// through its own half of `tokens` (so no token is in flight on two
/// threads at once); with `body`, a new display name each time.
fn wrk_script(method: &str, tokens: &[String], body: bool) -> String {
    let list = tokens
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(",\n");
    let body = if body {
        "local body = '{\"display_name\":\"wrk ' .. n .. ' ' .. math.random(1000000) .. '\"}'
  return wrk.format(method, nil, {['Authorization'] = 'Bearer ' .. t, ['Content-Type'] = 'application/json'}, body)"
    } else {
        "return wrk.format(method, nil, {['Authorization'] = 'Bearer ' .. t}, nil)"
    };
    format!(
        "local tokens = {{\n{list}\n}}
local threads = 0
function setup(thread)
  thread:set('id', threads)
  threads = threads + 1
end
method = '{method}'
local n = 0
local first, count
function init(args)
  count = math.floor(#tokens / 2)
  first = (id or 0) * count
end
request = function()
  n = n + 1
  local t = tokens[first + (n % count) + 1]
  {body}
end
"
    )
}

//! Scenario 8: the managed cloud's setups. GET /me with TLS to Postgres
//! (`verify-full`) and Redis (`rediss://`) against the same without TLS
//! (each a Postgres cluster of its own made the same way, a Redis process of
//! its own); and GET /me through PgBouncer in transaction mode against
//! `pgbench -S` through the same PgBouncer.

use crate::auth::Keys;
use crate::http::median;
use crate::report::Scenario;
use crate::tools::{self, Proc};
use std::time::Duration;

/// PgBouncer's server connections: the app's whole budget.
const POOL_SIZE: usize = 16;

async fn get_me_rps(
    keys: &Keys,
    env: &[(&'static str, String)],
    uid: &str,
    secs: u32,
) -> anyhow::Result<(f64, f64)> {
    let (app, _) = tools::start_app("serve", env).await?;
    let rps = measure(keys, &app, uid, secs).await;
    drop(app);
    rps
}

async fn measure(keys: &Keys, app: &Proc, uid: &str, secs: u32) -> anyhow::Result<(f64, f64)> {
    let client = tools::client(Duration::from_secs(10))?;
    let token = keys.token(uid, Some(&format!("{uid}@example.com")), None)?;
    let me = format!("http://127.0.0.1:{}/api/v1/me", app.port);
    let created = client
        .patch(&me)
        .bearer_auth(&token)
        .json(&serde_json::json!({}))
        .send()
        .await?
        .status();
    anyhow::ensure!(created == 201, "PATCH /me answered {created}");
    tools::wrk(
        &me,
        64,
        secs,
        &[format!("Authorization: Bearer {token}")],
        None,
    )
}

/// `env` with the database and Redis replaced.
fn with(
    env: &[(&'static str, String)],
    replace: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    let mut out: Vec<_> = env
        .iter()
        .filter(|(k, _)| !replace.iter().any(|(r, _)| r == k))
        .cloned()
        .collect();
    out.extend(replace.iter().cloned());
    out
}

pub(crate) async fn run(secs: u32, out: &mut Vec<Scenario>) -> anyhow::Result<()> {
    let keys = Keys::start().await?;
    let db = test_support::TestDb::new().await;
    let redis = test_support::TestRedis::new().await;
    let base = crate::http::app_env(&db, &redis, &keys);
    let mut s = Scenario::new("8. managed cloud: TLS and a transaction pooler");

    // TLS against plaintext, each on servers of their own made alike.
    let ca = test_support::TestCa::new("bench");
    let tls_pg = test_support::TlsPostgres::start(&ca, &["localhost"], false);
    let plain_pg = test_support::TlsPostgres::without_tls(&ca);
    let tls_redis = test_support::TlsRedis::start(&ca, false);
    let plain_redis = test_support::RedisProcess::start();
    let root = ca.ca_file().display().to_string();
    let tls_url = tls_pg.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={root}"),
    );
    let plain_url = plain_pg.url("localhost", "sslmode=disable");
    for url in [&tls_url, &plain_url] {
        postgres_adapter::run_migrations(url).await?;
    }
    let tls_env = with(
        &base,
        &[
            ("DATABASE_URL", tls_url),
            ("REDIS_URL", tls_redis.url()),
            ("REDIS_TLS_CA_FILE", root.clone()),
        ],
    );
    let plain_env = with(
        &base,
        &[
            ("DATABASE_URL", plain_url),
            ("REDIS_URL", plain_redis.url()),
        ],
    );
    // Alternating rounds; medians.
    let third = (secs / 3).max(1);
    let (mut tls, mut plain) = (Vec::new(), Vec::new());
    for round in 0..3 {
        plain.push(
            get_me_rps(&keys, &plain_env, &format!("plain-{round}"), third)
                .await?
                .0,
        );
        tls.push(
            get_me_rps(&keys, &tls_env, &format!("tls-{round}"), third)
                .await?
                .0,
        );
    }
    let (tls_rps, plain_rps) = (median(&mut tls), median(&mut plain));
    s.ratio_reported(
        "GET /me with TLS to Postgres (verify-full) and Redis (rediss://), vs the same without TLS, 64 conns",
        tls_rps,
        plain_rps,
        "req/s",
    );
    s.notes.push(format!(
        "TLS rounds {tls:.0?} req/s; plaintext rounds {plain:.0?} req/s (medians used)"
    ));

    // Through PgBouncer in transaction mode, against pgbench -S through it.
    let pooled = test_support::PooledDatabase::new(POOL_SIZE).await;
    tools::run(std::process::Command::new("pgbench").args([
        "-i",
        "-s",
        "1",
        "-q",
        pooled.direct_url(),
    ]))?;
    let pooled_env = with(
        &base,
        &[
            ("DATABASE_URL", pooled.url().to_owned()),
            ("DATABASE_DIRECT_URL", pooled.direct_url().to_owned()),
        ],
    );
    let (app, _) = tools::start_app("serve", &pooled_env).await?;
    let (mut gets, mut pgs) = (Vec::new(), Vec::new());
    let third_s = third.to_string();
    for round in 0..3 {
        // Named prepared statements do not survive a transaction pooler
        // (PgBouncer 1.18): pgbench speaks the simple protocol, as it
        // must there.
        pgs.push(tools::pgbench(
            pooled.url(),
            &[
                "-S", "-M", "simple", "-c", "64", "-j", "2", "-T", &third_s, "-n",
            ],
        )?);
        gets.push(
            measure(&keys, &app, &format!("pooled-{round}"), third)
                .await?
                .0,
        );
    }
    drop(app);
    let (get_pooled, pgbench_pooled) = (median(&mut gets), median(&mut pgs));
    s.ratio(
        &format!(
            "GET /me through PgBouncer (transaction mode, {POOL_SIZE} server connections), vs pgbench -S through the same PgBouncer, 64 conns"
        ),
        get_pooled,
        pgbench_pooled,
        0.60,
        "req/s",
    );
    s.notes.push(format!(
        "through PgBouncer: GET /me rounds {gets:.0?} req/s; pgbench -S rounds {pgs:.0?} tps (medians used)"
    ));
    out.push(s);
    Ok(())
}

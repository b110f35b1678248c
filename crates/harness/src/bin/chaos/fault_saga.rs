//! Scenario 11: the worker SIGKILLed in the middle of account-deletion
//! sagas. Users with an avatar in the store and a job queued for
//! tomorrow delete their accounts while no worker runs; a worker starts on
//! the backlog and is killed once the first objects are gone; another
//! finishes. Every user's objects and queued jobs must be gone, and no
//! saga step may be left waiting, retrying or dead.

use crate::Outcome;
use crate::auth::Keys;
use crate::faults::{env, kill9, patch_me};
use crate::tools;
use ports::{JobQueue as _, NewJob};
use std::time::{Duration, Instant};
use test_support::{HttpObjectClient, TestDb, TestRedis, files_under};

/// Uploads and completes an avatar for the holder of `token`.
async fn avatar(client: &reqwest::Client, port: u16, token: &str) -> anyhow::Result<()> {
    let base = format!("http://127.0.0.1:{port}/api/v1/uploads");
    let created: serde_json::Value = client
        .post(&base)
        .bearer_auth(token)
        .json(&serde_json::json!({"purpose": "avatar", "content_type": "image/png", "size": 64}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let form = HttpObjectClient::form_of(&created)?;
    let (status, body) = HttpObjectClient::new().post(&form, vec![9; 64]).await;
    anyhow::ensure!(
        (200..300).contains(&status),
        "upload refused: {status} {body}"
    );
    let id = created["id"].as_str().unwrap_or_default();
    client
        .post(format!("{base}/{id}/complete"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

pub(crate) async fn killed_mid_saga(quick: bool) -> anyhow::Result<Outcome> {
    let users: usize = if quick { 100 } else { 300 };
    let keys = Keys::start().await?;
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    let storage = std::env::temp_dir().join(format!(
        "trellis-chaos-storage-{}",
        test_support::unique_suffix()
    ));
    let objects = storage.join("objects");
    let mut e = env(db.url(), redis.url(), redis.prefix(), &keys, None);
    e.push(("STORAGE_LOCAL_DIR", storage.display().to_string()));
    // One step at a time: the backlog takes long enough to kill into.
    e.push(("WORKER_CONCURRENCY", "1".into()));
    // The late sweep of objects (after the upload forms' lifetime in
    // production) comes a second after the other steps here.
    e.push(("DELETION_LATE_SWEEP_SECS", "1".into()));
    let lease = Duration::from_secs(3);
    let retry_base = Duration::from_millis(300);
    let (serve, _) = tools::start_app("serve", &e).await?;
    let client = tools::client(Duration::from_secs(10))?;
    let pairs: Vec<(String, Option<String>)> =
        (0..users).map(|i| (format!("leaver-{i}"), None)).collect();
    let tokens = keys.tokens(&pairs)?;
    let queue = queue_adapter::RedisJobQueue::new(
        queue_adapter::build_pool(&queue_adapter::RedisSettings::new(redis.url()))?,
        queue_adapter::QueueSettings::new(redis.prefix()),
    );
    let tomorrow = chrono::Utc::now() + chrono::Duration::days(1);
    let mut queued = Vec::new();
    for ((uid, _), token) in pairs.iter().zip(&tokens) {
        anyhow::ensure!(patch_me(&client, serve.port, token).await? == 201);
        avatar(&client, serve.port, token).await?;
        queued.push(
            queue
                .enqueue(
                    NewJob::new("push:send", 1, &serde_json::json!({ "uid": uid }))?
                        .run_at(tomorrow)
                        .owned_by(uid.as_str()),
                )
                .await?,
        );
    }
    anyhow::ensure!(files_under(&objects) == users, "every avatar stored");
    // Every account is deleted before a worker runs: a backlog of sagas.
    for token in &tokens {
        let status = client
            .delete(format!("http://127.0.0.1:{}/api/v1/me", serve.port))
            .bearer_auth(token)
            .send()
            .await?
            .status();
        anyhow::ensure!(status == 202, "DELETE /api/v1/me answered {status}");
    }
    let (mut worker, _) = tools::start_app("worker", &e).await?;
    let first_by = Instant::now() + Duration::from_secs(30);
    while files_under(&objects) == users {
        anyhow::ensure!(Instant::now() < first_by, "no saga ever started");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    kill9(&mut worker);
    let killed_at = Instant::now();
    let left_at_kill = files_under(&objects);
    let (worker, _) = tools::start_app("worker", &e).await?;
    // The dead worker's lease ends, the new worker's recoverer moves its
    // step to retry after the first delay; then the rest of the backlog
    // (five steps per user, one at a time) runs.
    let bound = lease + lease / 4 + retry_base + Duration::from_secs(30);
    let mut o = Outcome {
        sent: users,
        ..Outcome::default()
    };
    let stuck = |state| {
        let queue = queue.clone();
        async move {
            queue
                .list_of_kind("default", state, "account:erase", None, 100)
                .await
                .map(|p| p.jobs.len())
                .unwrap_or(usize::MAX)
        }
    };
    let finished = loop {
        let mut live = 0;
        for state in [
            queue_adapter::JobState::Pending,
            queue_adapter::JobState::Scheduled,
            queue_adapter::JobState::Active,
            queue_adapter::JobState::Retry,
        ] {
            live += stuck(state).await;
        }
        let mut jobs_left = 0;
        for id in &queued {
            if queue.job(&id.to_string()).await?.is_some() {
                jobs_left += 1;
            }
        }
        let files = files_under(&objects);
        if live == 0 && jobs_left == 0 && files == 0 {
            break Some(killed_at.elapsed());
        }
        if killed_at.elapsed() > bound {
            o.notes.push(format!(
                "after {:.1} s: {files} object(s), {jobs_left} queued job(s), {live} saga step(s) still left",
                bound.as_secs_f64()
            ));
            o.lost = files.max(jobs_left);
            o.errors += 1;
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let dead = stuck(queue_adapter::JobState::Dead).await;
    if dead > 0 {
        o.errors += 1;
        o.notes.push(format!("{dead} saga step(s) dead"));
    }
    if left_at_kill == 0 {
        o.errors += 1;
        o.notes
            .push("every object was gone before the kill: the fault did not happen".into());
    }
    if let Some(t) = finished {
        o.processed = users;
        o.notes.push(format!(
            "killed with {left_at_kill} of {users} users' objects left; every saga done {:.2} s later: no object, no queued job, no step left or dead",
            t.as_secs_f64()
        ));
    }
    drop((serve, worker));
    let _ = std::fs::remove_dir_all(&storage);
    Ok(o)
}

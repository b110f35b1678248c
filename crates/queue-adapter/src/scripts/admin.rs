//! The scripts of `app jobs` and the ops console: revive, run now,
//! resume, delete.

use super::*;

/// KEYS: dead, pending, wake. ARGV: id, job prefix, unique prefix.
/// Runs a dead job again, with a fresh set of retries. Its unique key (given
/// up when it died) is taken again if free; if a newer job holds it, the
/// revived job runs anyway without it and never releases the newer job's key.
/// Returns 1, or 0 when the job is not dead.
pub(crate) fn revive() -> String {
    format!(
        "{NOW_MS}{WAKE}{HOLD_UNIQUE}
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
local key = ARGV[2] .. ARGV[1]
if redis.call('EXISTS', key) == 0 then return 0 end
redis.call('HSET', key, 'attempt', 0, 'state', 'pending', 'ready_at', now_ms())
hold_unique(key, ARGV[1], ARGV[3], 0)
redis.call('LPUSH', KEYS[2], ARGV[1])
wake(KEYS[3])
return 1"
    )
}

/// KEYS: scheduled, retry, pending, wake. ARGV: id, job prefix.
/// Runs a scheduled job, or one waiting for its retry, now: it goes to the
/// end of the pending list (its attempts count as they were).
/// Returns 1, or 0 when it was neither scheduled nor waiting to retry.
pub(crate) fn run_now() -> String {
    format!(
        "{NOW_MS}{WAKE}
if redis.call('ZREM', KEYS[1], ARGV[1]) + redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
local key = ARGV[2] .. ARGV[1]
if redis.call('EXISTS', key) == 0 then return 0 end
redis.call('HSET', key, 'state', 'pending', 'ready_at', now_ms())
redis.call('LPUSH', KEYS[3], ARGV[1])
wake(KEYS[4])
return 1"
    )
}

/// KEYS: control, pending, wake.
/// Resumes a paused queue and wakes its idle workers if jobs wait.
/// Returns 1, or 0 when it was not paused.
pub(crate) fn resume() -> String {
    format!(
        "{WAKE}
if redis.call('HDEL', KEYS[1], 'paused') == 0 then return 0 end
if redis.call('LLEN', KEYS[2]) > 0 then wake(KEYS[3]) end
return 1"
    )
}

/// KEYS: pending, scheduled, retry, active, dead. ARGV: id, job prefix, unique prefix.
/// Deletes a job wherever it is (a worker running it loses its lease).
/// Returns 1 if it existed.
pub(crate) fn delete() -> String {
    format!(
        "{RELEASE_UNIQUE}
local key = ARGV[2] .. ARGV[1]
if redis.call('EXISTS', key) == 0 then return 0 end
release_unique(key, ARGV[1], ARGV[3])
redis.call('LREM', KEYS[1], 0, ARGV[1])
for i = 2, 5 do redis.call('ZREM', KEYS[i], ARGV[1]) end
redis.call('DEL', key)
return 1"
    )
}

/// KEYS: pending, scheduled, retry, dead, owner set. ARGV: job prefix,
/// unique prefix.
/// Deletes the owner's jobs that are waiting or dead; a running one stays
/// (and stays named in the set, so a later call finds it if it comes
/// back to wait for a retry). Returns `{deleted, still_running}`.
pub(crate) fn cancel_owned() -> String {
    format!(
        "{RELEASE_UNIQUE}
local deleted, running = 0, 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  local key = ARGV[1] .. id
  local state = redis.call('HGET', key, 'state')
  if state == 'active' then
    running = running + 1
  else
    if state then
      release_unique(key, id, ARGV[2])
      redis.call('LREM', KEYS[1], 0, id)
      for i = 2, 4 do redis.call('ZREM', KEYS[i], id) end
      redis.call('DEL', key)
      deleted = deleted + 1
    end
    redis.call('SREM', KEYS[5], id)
  end
end
return {{deleted, running}}"
    )
}

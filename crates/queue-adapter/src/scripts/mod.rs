//! Every state change of a job, as one atomic Lua script.
//!
//! Keys (with `P` = the queue prefix, `Q` = a queue name):
//! - `P job:<id>`       hash: `state`, `ready_at`, `attempt` and `lease` (the
//!   fencing number of the current lease; both absent until the first
//!   fetch), `max_retries` (absent: 0), `unique_key` and `unique_ttl_ms`
//!   (absent: no unique key), `last_error` and `failed_at` once it failed,
//!   and `body`: kind, version, queue, timeout and payload as one compact
//!   JSON value the scripts never read (see `queue/stored.rs`; a job stored
//!   before `body` existed has those as fields of their own instead)
//! - `P Q:pending`      list of ids ready to run (LPUSH in, RPOP out: FIFO)
//! - `P Q:scheduled`    zset id -> run at (ms)
//! - `P Q:retry`        zset id -> retry at (ms)
//! - `P Q:active`       zset id -> lease deadline (ms); a heartbeat moves it on
//! - `P Q:dead`         zset id -> died at (ms), capped by size and age
//! - `P Q:wake`         list of tokens that wake idle workers (BLPOP)
//! - `P Q:processed`, `P Q:failed`   counters
//! - `P Q:control`      hash of the queue's controls: `paused` (since when,
//!   ms), `concurrency` (cap across workers), `rate` and `period_ms`
//! - `P Q:throttle`     the rate limit's theoretical arrival time (ms)
//! - `P unique:<key>`   the id of the live job holding a unique key
//! - `P cron:<name>:<tick>`   a periodic tick that has been enqueued
//! - `P queues`         set of queue names
//!
//! **Lease fencing.** FETCH increments the job's `lease` field and hands the
//! new number to the worker. COMPLETE, FAIL, REQUEUE and HEARTBEAT act only
//! when the job is still `active` *and* its `lease` equals the caller's:
//! once a lease has been recovered (and perhaps fetched again by another
//! worker), its old holder can no longer change the job.
//!
//! **Clock.** Lease deadlines, schedules and timestamps use Redis' own clock
//! (`TIME`), never the caller's, so workers with skewed clocks agree. Only
//! an explicit `run_at` (an absolute time chosen by the enqueuer) comes from
//! outside; it is compared with Redis' clock.
//!
//! Scripts touch job hashes named from a prefix argument: on a Redis
//! Cluster that prefix carries the queue's hash tag (see `queue/mod.rs`).

/// Redis' clock in milliseconds since the epoch.
const NOW_MS: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
";

/// Whether `key` (a job hash) is active under lease `token`.
const HOLDS_LEASE: &str = r"
local function holds_lease(key, token)
  local f = redis.call('HMGET', key, 'state', 'lease')
  return f[1] == 'active' and f[2] == token
end
";

/// Release a job's unique key if it still holds it.
const RELEASE_UNIQUE: &str = r"
local function release_unique(key, id, uprefix)
  local unique = redis.call('HGET', key, 'unique_key')
  if unique and unique ~= '' then
    local ukey = uprefix .. unique
    if redis.call('GET', ukey) == id then redis.call('DEL', ukey) end
  end
end
";

/// Keep a job's unique key for at least `delay` + its TTL: it next runs in
/// `delay` ms. A key that has expired meanwhile is taken again if free; one
/// held by another job is left alone.
const HOLD_UNIQUE: &str = r"
local function hold_unique(key, id, uprefix, delay)
  local f = redis.call('HMGET', key, 'unique_key', 'unique_ttl_ms')
  local unique, ttl = f[1], tonumber(f[2] or '0') or 0
  if not unique or unique == '' or ttl <= 0 then return end
  local ukey = uprefix .. unique
  local want = math.max(delay, 0) + ttl
  local holder = redis.call('GET', ukey)
  if holder == id then
    if redis.call('PTTL', ukey) < want then redis.call('PEXPIRE', ukey, want) end
  elseif not holder then
    redis.call('SET', ukey, id, 'NX', 'PX', want)
  end
end
";

/// Caps the dead set: drop entries older than max age, then the oldest past
/// max size (at most 500 of each per call, so one call stays short).
const CAP_DEAD: &str = r"
local function cap_dead(dead, jprefix, now, max_size, max_age)
  local old = redis.call('ZRANGEBYSCORE', dead, '-inf', now - max_age, 'LIMIT', 0, 500)
  for _, id in ipairs(old) do
    redis.call('ZREM', dead, id)
    redis.call('DEL', jprefix .. id)
  end
  local excess = math.min(redis.call('ZCARD', dead) - max_size, 500)
  if excess > 0 then
    local ids = redis.call('ZRANGE', dead, 0, excess - 1)
    for _, id in ipairs(ids) do
      redis.call('ZREM', dead, id)
      redis.call('DEL', jprefix .. id)
    end
  end
end
";

/// `redis.call(cmd, key, ...)` with the elements of `list` as arguments, a
/// thousand at a time (Lua's `unpack` has a limit), `step` per group (2
/// for score/member pairs).
const CALL_CHUNKED: &str = r"
local function call_chunked(cmd, key, list, step)
  for i = 1, #list, 1000 * step do
    redis.call(cmd, key, unpack(list, i, math.min(i + 1000 * step - 1, #list)))
  end
end
";

/// Wake idle workers of a queue.
const WAKE: &str = r"
local function wake(list)
  redis.call('LPUSH', list, '1')
  redis.call('LTRIM', list, 0, 63)
end
";

/// Adds `n` to the current minute's count next to counter `counter`
/// (`<counter>:<minute since the epoch>`, kept 65 minutes): what the ops
/// console charts for the last hour. Same hash tag as `counter`.
const COUNT_MINUTE: &str = r"
local function count_minute(counter, n)
  local t = redis.call('TIME')
  local key = counter .. ':' .. math.floor(tonumber(t[1]) / 60)
  redis.call('INCRBY', key, n)
  redis.call('EXPIRE', key, 3900)
end
";

/// Wakes an idle worker when jobs left the active set of a queue whose
/// concurrency is capped and jobs are waiting: a worker that found it at
/// its cap goes on at once instead of after its idle wait.
const WAKE_IF_CAPPED: &str = r"
local function wake_if_capped(control, pending, wake_list)
  if redis.call('HEXISTS', control, 'concurrency') == 1 and redis.call('LLEN', pending) > 0 then
    wake(wake_list)
  end
end
";

mod admin;
mod lifecycle;

pub(crate) use admin::*;
pub(crate) use lifecycle::*;

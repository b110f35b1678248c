//! Every state change of a job, as one atomic Lua script.
//!
//! Keys (with `P` = the queue prefix, `Q` = a queue name):
//! - `P job:<id>`       hash: the job and its state
//! - `P Q:pending`      list of ids ready to run (LPUSH in, RPOP out: FIFO)
//! - `P Q:scheduled`    zset id -> run at (ms)
//! - `P Q:retry`        zset id -> retry at (ms)
//! - `P Q:active`       zset id -> lease deadline (ms); a heartbeat moves it on
//! - `P Q:dead`         zset id -> died at (ms), capped by size and age
//! - `P Q:wake`         list of tokens that wake idle workers (BLPOP)
//! - `P Q:processed`, `P Q:failed`   counters
//! - `P unique:<key>`   the id of the live job holding a unique key
//! - `P queues`         set of queue names
//!
//! Scripts touch job hashes named from a prefix argument, so they need a
//! single Redis (or a primary with replicas), not Redis Cluster.

/// KEYS: job, pending, scheduled, unique, queues, wake.
/// ARGV: id, queue, now, run_at (0: now), unique_ttl_ms (0: none), field, value, ...
/// Returns 1, or 0 when the unique key is taken.
pub(crate) const ENQUEUE: &str = r"
if tonumber(ARGV[5]) > 0 then
  if not redis.call('SET', KEYS[4], ARGV[1], 'NX', 'PX', ARGV[5]) then return 0 end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('SADD', KEYS[5], ARGV[2])
local run_at = tonumber(ARGV[4])
if run_at > tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'state', 'scheduled')
  redis.call('ZADD', KEYS[3], run_at, ARGV[1])
else
  redis.call('HSET', KEYS[1], 'state', 'pending', 'ready_at', ARGV[3])
  redis.call('LPUSH', KEYS[2], ARGV[1])
  redis.call('LPUSH', KEYS[6], '1')
  redis.call('LTRIM', KEYS[6], 0, 63)
end
return 1
";

/// KEYS: pending, active. ARGV: now, lease_ms, job prefix, max jobs.
/// Pops up to `max` of the oldest ready jobs, leases them, counts the
/// attempt. Returns `{{id, {field, value, ...}}, ...}` (possibly empty).
pub(crate) const FETCH: &str = r"
local out = {}
local max = tonumber(ARGV[4])
local deadline = tonumber(ARGV[1]) + tonumber(ARGV[2])
for i = 1, max * 4 do
  if #out >= max then break end
  local id = redis.call('RPOP', KEYS[1])
  if not id then break end
  local key = ARGV[3] .. id
  if redis.call('EXISTS', key) == 1 then
    redis.call('ZADD', KEYS[2], deadline, id)
    redis.call('HINCRBY', key, 'attempt', 1)
    redis.call('HSET', key, 'state', 'active', 'started_at', ARGV[1])
    out[#out + 1] = {id, redis.call('HGETALL', key)}
  end
end
return out
";

/// KEYS: scheduled, retry, pending, wake. ARGV: now, limit, job prefix.
/// Moves due scheduled and retry jobs to pending. Returns how many.
pub(crate) const FORWARD: &str = r"
local moved = 0
for _, src in ipairs({KEYS[1], KEYS[2]}) do
  local ids = redis.call('ZRANGEBYSCORE', src, '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
  for _, id in ipairs(ids) do
    redis.call('ZREM', src, id)
    local key = ARGV[3] .. id
    if redis.call('EXISTS', key) == 1 then
      redis.call('HSET', key, 'state', 'pending', 'ready_at', ARGV[1])
      redis.call('LPUSH', KEYS[3], id)
      moved = moved + 1
    end
  end
end
if moved > 0 then
  redis.call('LPUSH', KEYS[4], '1')
  redis.call('LTRIM', KEYS[4], 0, 63)
end
return moved
";

/// KEYS: active. ARGV: deadline, id, id, ... Extends leases still held.
pub(crate) const HEARTBEAT: &str = r"
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', ARGV[1], ARGV[i])
end
return n
";

/// Shared by the scripts that end a job: release its unique key if it still
/// holds it. Expects `key` (the job hash) and `uprefix`.
const RELEASE_UNIQUE: &str = r"
local function release_unique(key, id, uprefix)
  local unique = redis.call('HGET', key, 'unique_key')
  if unique and unique ~= '' then
    local ukey = uprefix .. unique
    if redis.call('GET', ukey) == id then redis.call('DEL', ukey) end
  end
end
";

/// Caps the dead set: drop entries older than max age, then the oldest past max size.
const CAP_DEAD: &str = r"
local function cap_dead(dead, jprefix, now, max_size, max_age)
  local old = redis.call('ZRANGEBYSCORE', dead, '-inf', now - max_age, 'LIMIT', 0, 500)
  for _, id in ipairs(old) do
    redis.call('ZREM', dead, id)
    redis.call('DEL', jprefix .. id)
  end
  local excess = redis.call('ZCARD', dead) - max_size
  if excess > 0 then
    local ids = redis.call('ZRANGE', dead, 0, excess - 1)
    for _, id in ipairs(ids) do
      redis.call('ZREM', dead, id)
      redis.call('DEL', jprefix .. id)
    end
  end
end
";

/// KEYS: active, processed. ARGV: job prefix, unique prefix, id, id, ...
/// The jobs succeeded: each is deleted and its unique key released.
/// Returns how many existed.
pub(crate) fn complete() -> String {
    format!(
        "{RELEASE_UNIQUE}
local n = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[1] .. id
  if redis.call('EXISTS', key) == 1 then
    release_unique(key, id, ARGV[2])
    redis.call('DEL', key)
    n = n + 1
  end
end
if n > 0 then redis.call('INCRBY', KEYS[2], n) end
return n"
    )
}

/// KEYS: active, retry, dead, failed.
/// ARGV: id, job prefix, unique prefix, now, error, retry_at (0: dead), dead max size, dead max age ms.
/// Returns 1 (retry), 2 (dead) or 0 (job gone).
pub(crate) fn fail() -> String {
    format!(
        "{RELEASE_UNIQUE}{CAP_DEAD}
local key = ARGV[2] .. ARGV[1]
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('EXISTS', key) == 0 then return 0 end
redis.call('HSET', key, 'last_error', ARGV[5], 'failed_at', ARGV[4])
redis.call('INCR', KEYS[4])
if tonumber(ARGV[6]) > 0 then
  redis.call('HSET', key, 'state', 'retry')
  redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
  return 1
end
redis.call('HSET', key, 'state', 'dead')
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
release_unique(key, ARGV[1], ARGV[3])
cap_dead(KEYS[3], ARGV[2], tonumber(ARGV[4]), tonumber(ARGV[7]), tonumber(ARGV[8]))
return 2"
    )
}

/// KEYS: active, retry, dead, failed.
/// ARGV: now, job prefix, unique prefix, limit, dead max size, dead max age ms.
/// Jobs whose lease ran out (their worker died) go to retry at once, or to
/// the dead set when out of retries. Returns `{retried, dead}`.
pub(crate) fn recover() -> String {
    format!(
        "{RELEASE_UNIQUE}{CAP_DEAD}
local now = tonumber(ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
local retried, dead = 0, 0
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[2] .. id
  if redis.call('EXISTS', key) == 1 then
    local attempt = tonumber(redis.call('HGET', key, 'attempt') or '0')
    local max = tonumber(redis.call('HGET', key, 'max_retries') or '0')
    redis.call('HSET', key, 'last_error', 'lease expired: the worker running it stopped responding', 'failed_at', ARGV[1])
    redis.call('INCR', KEYS[4])
    if attempt > max then
      redis.call('HSET', key, 'state', 'dead')
      redis.call('ZADD', KEYS[3], now, id)
      release_unique(key, id, ARGV[3])
      dead = dead + 1
    else
      redis.call('HSET', key, 'state', 'retry')
      redis.call('ZADD', KEYS[2], now, id)
      retried = retried + 1
    end
  end
end
if dead > 0 then cap_dead(KEYS[3], ARGV[2], now, tonumber(ARGV[5]), tonumber(ARGV[6])) end
return {{retried, dead}}"
    )
}

/// KEYS: active, pending, wake. ARGV: id, job prefix.
/// Puts an unfinished job back at the front of its queue (graceful shutdown);
/// the attempt does not count.
pub(crate) const REQUEUE: &str = r"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
local key = ARGV[2] .. ARGV[1]
if redis.call('EXISTS', key) == 0 then return 0 end
redis.call('HINCRBY', key, 'attempt', -1)
redis.call('HSET', key, 'state', 'pending')
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('LPUSH', KEYS[3], '1')
redis.call('LTRIM', KEYS[3], 0, 63)
return 1
";

/// KEYS: dead, pending, wake. ARGV: id, job prefix, now.
/// Runs a dead job again, with a fresh set of retries.
pub(crate) const REVIVE: &str = r"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
local key = ARGV[2] .. ARGV[1]
if redis.call('EXISTS', key) == 0 then return 0 end
redis.call('HSET', key, 'attempt', 0, 'state', 'pending', 'ready_at', ARGV[3])
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('LPUSH', KEYS[3], '1')
redis.call('LTRIM', KEYS[3], 0, 63)
return 1
";

/// KEYS: pending, scheduled, retry, active, dead. ARGV: id, job prefix, unique prefix.
/// Deletes a job wherever it is. Returns 1 if it existed.
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

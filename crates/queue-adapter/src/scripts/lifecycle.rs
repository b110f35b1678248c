//! The scripts of a job's life: enqueue, fetch, forward, heartbeat,
//! complete, fail, recover, requeue.

use super::*;

/// KEYS: job, pending, scheduled, unique, wake, tick claim, owner set.
/// ARGV: id, queue, run_at ms (0: now), unique_ttl_ms (0: none),
/// tick claim ttl s (0: no claim), body, max_retries, unique key, owner
/// ('' none), owner set ttl ms.
/// An owned job is named in its owner's set (per queue, same slot), which
/// lives `owner set ttl` past the job's due time so that
/// `cancel_owned` finds it; ids of finished jobs age out with the set.
/// The unique key is held for its TTL counted from when the job is due
/// (`max(ttl, run_at - now + ttl)`). A periodic tick is claimed in the same
/// step, so it is enqueued once or not at all. Only the fields a job needs
/// are written (no zero counters, no empty unique key).
/// Returns 1, or 3 when the queue must be named in the set of queues (it
/// was empty, or the job is scheduled; the set is outside the queue's hash
/// slot, so the caller adds it), 0 when the unique key is taken, or 2 when
/// the tick was already enqueued.
pub(crate) fn enqueue() -> String {
    format!(
        "{NOW_MS}{WAKE}
local now = now_ms()
local run_at = tonumber(ARGV[3])
local claim_ttl = tonumber(ARGV[5])
if claim_ttl > 0 and redis.call('EXISTS', KEYS[6]) == 1 then return 2 end
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  local px = math.max(ttl, run_at - now + ttl)
  if not redis.call('SET', KEYS[4], ARGV[1], 'NX', 'PX', px) then return 0 end
end
if claim_ttl > 0 then redis.call('SET', KEYS[6], ARGV[1], 'EX', claim_ttl) end
local f = {{'body', ARGV[6]}}
if ARGV[7] ~= '0' then f[#f + 1] = 'max_retries'; f[#f + 1] = ARGV[7] end
if ttl > 0 then
  f[#f + 1] = 'unique_key'; f[#f + 1] = ARGV[8]
  f[#f + 1] = 'unique_ttl_ms'; f[#f + 1] = ARGV[4]
end
if ARGV[9] ~= '' then
  f[#f + 1] = 'owner'; f[#f + 1] = ARGV[9]
  redis.call('SADD', KEYS[7], ARGV[1])
  local keep = math.max(run_at - now, 0) + tonumber(ARGV[10])
  if redis.call('PTTL', KEYS[7]) < keep then redis.call('PEXPIRE', KEYS[7], keep) end
end
if run_at > now then
  redis.call('HSET', KEYS[1], 'state', 'scheduled', unpack(f))
  redis.call('ZADD', KEYS[3], run_at, ARGV[1])
  return 3
end
redis.call('HSET', KEYS[1], 'state', 'pending', 'ready_at', now, unpack(f))
-- A queue's first job always finds its list empty: it is named then.
if redis.call('LPUSH', KEYS[2], ARGV[1]) == 1 then
  wake(KEYS[5])
  return 3
end
return 1"
    )
}

/// KEYS: pending, active, wake, control, throttle.
/// ARGV: lease_ms, job prefix, max jobs.
/// Pops up to `max` of the oldest ready jobs, leases them under a fresh
/// fencing number (`lease`), counts the attempt. Ids that are not pending
/// (a stale entry) are skipped, never leased twice. A full batch that
/// leaves jobs behind wakes another idle worker (an enqueue wakes one only
/// when the queue was empty).
///
/// The queue's controls (`control` hash) hold jobs back: `paused` leases
/// none; `concurrency` caps the jobs active at once across every worker
/// (the `active` set counts them); `rate` jobs per `period_ms` is a GCRA
/// (burst `rate`) whose theoretical arrival time is kept in `throttle`.
/// Returns `{{jobs, held}}`: `jobs` is `{{{{id, attempt, lease, body,
/// max_retries, ready_at, old}}, ...}}` (possibly empty), where `old` is
/// `{{}}`, or for a job stored before `body` existed (`body` is then empty)
/// its whole hash; `held` is 0 when nothing held jobs back, -1 paused, -2
/// at its concurrency cap, or the ms until the rate allows the next job.
pub(crate) fn fetch() -> String {
    format!(
        "{NOW_MS}{WAKE}{CALL_CHUNKED}
local out, leased = {{}}, {{}}
local max = tonumber(ARGV[3])
local now = now_ms()
local c = redis.call('HMGET', KEYS[4], 'paused', 'concurrency', 'rate', 'period_ms')
if c[1] then return {{out, -1}} end
if c[2] then
  max = math.min(max, tonumber(c[2]) - redis.call('ZCARD', KEYS[2]))
  if max <= 0 then return {{out, -2}} end
end
local tat, interval, period
if c[3] then
  period = tonumber(c[4])
  interval = period / tonumber(c[3])
  tat = math.max(tonumber(redis.call('GET', KEYS[5]) or '0'), now)
  local allowed = math.floor((now + period - tat) / interval)
  if allowed <= 0 then return {{out, math.max(math.ceil(tat - period + interval - now), 1)}} end
  max = math.min(max, allowed)
end
local deadline = now + tonumber(ARGV[1])
for round = 1, 4 do
  if #out >= max then break end
  local ids = redis.call('RPOP', KEYS[1], max - #out)
  if not ids then break end
  for _, id in ipairs(ids) do
    local key = ARGV[2] .. id
    local f = redis.call('HMGET', key, 'state', 'attempt', 'lease', 'body', 'max_retries', 'ready_at')
    if f[1] == 'pending' then
      local attempt = tonumber(f[2] or '0') + 1
      local lease = tonumber(f[3] or '0') + 1
      redis.call('HSET', key, 'state', 'active', 'attempt', attempt, 'lease', lease)
      leased[#leased + 1] = deadline
      leased[#leased + 1] = id
      local old = {{}}
      if not f[4] then old = redis.call('HGETALL', key) end
      out[#out + 1] = {{id, attempt, lease, f[4] or '', tonumber(f[5] or '0'), tonumber(f[6] or '0'), old}}
    end
  end
end
call_chunked('ZADD', KEYS[2], leased, 2)
if tat and #out > 0 then
  tat = tat + #out * interval
  redis.call('SET', KEYS[5], string.format('%.3f', tat), 'PX', math.ceil(tat - now + period))
end
if #out >= max and redis.call('LLEN', KEYS[1]) > 0 then wake(KEYS[3]) end
return {{out, 0}}"
    )
}

/// KEYS: scheduled, retry, pending, wake. ARGV: limit, job prefix.
/// Moves due scheduled and retry jobs to pending. Returns how many. A job
/// is due once its time is strictly in the past (`(now`): `now_ms` drops the
/// microseconds, so a job due at this very millisecond could otherwise move
/// up to a millisecond before the time it was given.
pub(crate) fn forward() -> String {
    format!(
        "{NOW_MS}{WAKE}
local now = now_ms()
local moved = 0
for _, src in ipairs({{KEYS[1], KEYS[2]}}) do
  local ids = redis.call('ZRANGEBYSCORE', src, '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[1]))
  for _, id in ipairs(ids) do
    redis.call('ZREM', src, id)
    local key = ARGV[2] .. id
    if redis.call('EXISTS', key) == 1 then
      redis.call('HSET', key, 'state', 'pending', 'ready_at', now)
      redis.call('LPUSH', KEYS[3], id)
      moved = moved + 1
    end
  end
end
if moved > 0 then wake(KEYS[4]) end
return moved"
    )
}

/// KEYS: active. ARGV: lease_ms, job prefix, id, token, id, token, ...
/// Extends the leases still held under those tokens to now + lease.
/// Returns the ids whose lease is lost (recovered, refetched or deleted).
pub(crate) fn heartbeat() -> String {
    format!(
        "{NOW_MS}{HOLDS_LEASE}
local deadline = now_ms() + tonumber(ARGV[1])
local lost = {{}}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if holds_lease(ARGV[2] .. id, token) then
    redis.call('ZADD', KEYS[1], 'XX', deadline, id)
  else
    lost[#lost + 1] = id
  end
end
return lost"
    )
}

/// KEYS: active, processed, control, pending, wake.
/// ARGV: job prefix, unique prefix, id, token, ...
/// The jobs succeeded: each one still leased under its token is deleted and
/// its unique key released. Returns one number per job: 1 completed, 0 its
/// lease was lost (the job is left alone).
pub(crate) fn complete() -> String {
    format!(
        "{CALL_CHUNKED}{WAKE}{WAKE_IF_CAPPED}{COUNT_MINUTE}
local out, ids, keys = {{}}, {{}}, {{}}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local key = ARGV[1] .. id
  local f = redis.call('HMGET', key, 'state', 'lease', 'unique_key')
  if f[1] == 'active' and f[2] == token then
    if f[3] and f[3] ~= '' then
      local ukey = ARGV[2] .. f[3]
      if redis.call('GET', ukey) == id then redis.call('DEL', ukey) end
    end
    ids[#ids + 1] = id
    keys[#keys + 1] = key
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
call_chunked('ZREM', KEYS[1], ids, 1)
for i = 1, #keys, 1000 do redis.call('DEL', unpack(keys, i, math.min(i + 999, #keys))) end
if #ids > 0 then
  redis.call('INCRBY', KEYS[2], #ids)
  count_minute(KEYS[2], #ids)
  wake_if_capped(KEYS[3], KEYS[4], KEYS[5])
end
return out"
    )
}

/// KEYS: active, retry, dead, failed, control, pending, wake.
/// ARGV: id, job prefix, unique prefix, token, error, retry delay ms
/// (-1: dead), dead max size, dead max age ms.
/// A retry keeps the unique key until the retry is due plus its TTL.
/// Returns 1 (retry), 2 (dead) or 0 (lease lost: nothing changed).
pub(crate) fn fail() -> String {
    format!(
        "{NOW_MS}{HOLDS_LEASE}{RELEASE_UNIQUE}{HOLD_UNIQUE}{CAP_DEAD}{WAKE}{WAKE_IF_CAPPED}{COUNT_MINUTE}
local id = ARGV[1]
local key = ARGV[2] .. id
if not holds_lease(key, ARGV[4]) then return 0 end
local now = now_ms()
redis.call('ZREM', KEYS[1], id)
wake_if_capped(KEYS[5], KEYS[6], KEYS[7])
redis.call('HSET', key, 'last_error', ARGV[5], 'failed_at', now)
redis.call('INCR', KEYS[4])
count_minute(KEYS[4], 1)
local delay = tonumber(ARGV[6])
if delay >= 0 then
  redis.call('HSET', key, 'state', 'retry')
  redis.call('ZADD', KEYS[2], now + delay, id)
  hold_unique(key, id, ARGV[3], delay)
  return 1
end
redis.call('HSET', key, 'state', 'dead')
redis.call('ZADD', KEYS[3], now, id)
release_unique(key, id, ARGV[3])
cap_dead(KEYS[3], ARGV[2], now, tonumber(ARGV[7]), tonumber(ARGV[8]))
return 2"
    )
}

/// KEYS: active, retry, dead, failed.
/// ARGV: job prefix, unique prefix, limit, dead max size, dead max age ms,
/// retry base ms, retry cap ms, random seed.
/// Jobs whose lease ran out (their worker died or stalled) go to retry after
/// the usual backoff (equal jitter), or to the dead set when out of retries;
/// either way their old lease is void. Then the dead set is capped, even
/// when no job died. Returns `{retried, dead}`.
pub(crate) fn recover() -> String {
    format!(
        "{NOW_MS}{RELEASE_UNIQUE}{HOLD_UNIQUE}{CAP_DEAD}{COUNT_MINUTE}
math.randomseed(tonumber(ARGV[8]))
local function backoff_ms(attempt)
  local exp = tonumber(ARGV[6]) * 2 ^ math.min(math.max(attempt - 1, 0), 30)
  exp = math.min(exp, tonumber(ARGV[7]))
  local half = math.floor(exp / 2)
  return half + math.random(0, half)
end
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local retried, dead = 0, 0
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[1] .. id
  if redis.call('HGET', key, 'state') == 'active' then
    local attempt = tonumber(redis.call('HGET', key, 'attempt') or '0')
    local max = tonumber(redis.call('HGET', key, 'max_retries') or '0')
    redis.call('HSET', key, 'last_error', 'lease expired: the worker running it stopped responding', 'failed_at', now)
    redis.call('INCR', KEYS[4])
    if attempt > max then
      redis.call('HSET', key, 'state', 'dead')
      redis.call('ZADD', KEYS[3], now, id)
      release_unique(key, id, ARGV[2])
      dead = dead + 1
    else
      local delay = backoff_ms(attempt)
      redis.call('HSET', key, 'state', 'retry')
      redis.call('ZADD', KEYS[2], now + delay, id)
      hold_unique(key, id, ARGV[2], delay)
      retried = retried + 1
    end
  end
end
if retried + dead > 0 then count_minute(KEYS[4], retried + dead) end
cap_dead(KEYS[3], ARGV[1], now, tonumber(ARGV[4]), tonumber(ARGV[5]))
return {{retried, dead}}"
    )
}

/// KEYS: active, pending, wake. ARGV: id, job prefix, token.
/// Puts an unfinished job still leased under `token` back at the front of
/// its queue (graceful shutdown); the attempt does not count.
/// Returns 1, or 0 when the lease was lost (nothing changed).
pub(crate) fn requeue() -> String {
    format!(
        "{HOLDS_LEASE}{WAKE}
local key = ARGV[2] .. ARGV[1]
if not holds_lease(key, ARGV[3]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HINCRBY', key, 'attempt', -1)
redis.call('HSET', key, 'state', 'pending')
redis.call('RPUSH', KEYS[2], ARGV[1])
wake(KEYS[3])
return 1"
    )
}

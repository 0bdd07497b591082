//! The Lua scripts that make multi-step Redis updates atomic across replicas.

use std::sync::LazyLock;

use redis::Script;

/// Rate windows in Redis: a hash of per-second buckets (second → amount, the arithmetic of `window.rs`) plus two
/// bookkeeping fields, `n` (the sum of the buckets kept) and `o` (every bucket older than this second has been
/// removed). A call reads `n` and `o`, removes the buckets that stopped counting since `o` (usually none or one),
/// and never reads the whole hash except to compute a refusal's `Retry-After` or to rebuild a window written
/// without bookkeeping. The clock is Redis's own (`TIME`), so every replica sees the same window whatever its
/// local clock says. Every write restarts the key's TTL (just over a minute).
const WINDOW_LIB: &str = r#"
local WINDOW = 60
local NOW = tonumber(redis.call('TIME')[1])

-- Sums the live buckets from scratch, deleting stale and unreadable fields, and records the bookkeeping.
local function rebuild(key)
  local fields = redis.call('HGETALL', key)
  local total, stale = 0, {}
  for i = 1, #fields, 2 do
    local f = fields[i]
    if f ~= 'n' and f ~= 'o' then
      local second, n = tonumber(f), tonumber(fields[i + 1])
      if second == nil or n == nil or second + WINDOW <= NOW then
        stale[#stale + 1] = f
      else
        total = total + n
      end
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  redis.call('HSET', key, 'n', total, 'o', NOW - WINDOW + 1)
  return total
end

-- What counts in the window now.
local function used(key)
  local meta = redis.call('HMGET', key, 'n', 'o')
  local total, oldest = tonumber(meta[1]), tonumber(meta[2])
  local cutoff = NOW - WINDOW -- buckets at or before this second no longer count
  if total == nil or oldest == nil or cutoff - oldest >= WINDOW then return rebuild(key) end
  if oldest <= cutoff then
    local seconds = {}
    for second = oldest, cutoff do seconds[#seconds + 1] = second end
    local values = redis.call('HMGET', key, unpack(seconds))
    local stale = {}
    for i, v in ipairs(values) do
      if v then
        total = total - (tonumber(v) or 0)
        stale[#stale + 1] = seconds[i]
      end
    end
    if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
    if total < 0 then total = 0 end
    redis.call('HSET', key, 'n', total, 'o', cutoff + 1)
  end
  return total
end

-- Counts `amount` now. The TTL restarts with the first write of each second: the newest bucket then still
-- counts for less than the TTL left.
local function add(key, amount)
  if amount > 0 then
    local bucket = redis.call('HINCRBY', key, NOW, amount)
    redis.call('HINCRBY', key, 'n', amount)
    if bucket == amount then redis.call('EXPIRE', key, WINDOW + 1) end
  end
end

-- Takes back up to `amount` from the bucket of `second` (a settled reservation), if it still counts.
local function take_back(key, second, amount)
  if amount <= 0 or second + WINDOW <= NOW then return end
  local left = tonumber(redis.call('HGET', key, second) or '0') or 0
  local taken = math.min(left, amount)
  if taken <= 0 then return end
  if left <= amount then
    redis.call('HDEL', key, second)
  else
    redis.call('HINCRBY', key, second, -taken)
  end
  redis.call('HINCRBY', key, 'n', -taken)
end

-- Seconds until the usage still counting drops under `limit` (at least 1; a full window for a limit of 0).
local function retry_after(key, total, limit)
  local fields = redis.call('HGETALL', key)
  local live = {}
  for i = 1, #fields, 2 do
    local second, n = tonumber(fields[i]), tonumber(fields[i + 1])
    if second ~= nil and n ~= nil and second + WINDOW > NOW then live[#live + 1] = {second, n} end
  end
  table.sort(live, function(a, b) return a[1] < b[1] end)
  local left, retry = total, WINDOW
  for _, bucket in ipairs(live) do
    left = left - bucket[2]
    if left < limit then
      retry = bucket[1] + WINDOW - NOW
      break
    end
  end
  if retry < 1 then retry = 1 end
  return retry
end
"#;

/// A script using the window library.
fn window_script(body: &str) -> Script {
    Script::new(&format!("{WINDOW_LIB}{body}"))
}

/// One window, one operation (the single-limit calls of the `Store` trait).
///
/// KEYS[1] the window; ARGV[1] limit, ARGV[2] mode (`hit`: add 1 if under the limit; `check`: add nothing;
/// `add`: add ARGV[3] unconditionally), ARGV[3] amount for `add`.
/// Returns `{allowed (0/1), used (counting this hit), retry_after_secs}`.
pub(crate) static RATE_WINDOW: LazyLock<Script> = LazyLock::new(|| {
    window_script(
        r#"
local limit = tonumber(ARGV[1]) or 0
local mode = ARGV[2]
local total = used(KEYS[1])
if mode == 'add' then
  local amount = tonumber(ARGV[3]) or 0
  add(KEYS[1], amount)
  return {1, total + amount, 0}
end
if total < limit then
  if mode == 'hit' then
    add(KEYS[1], 1)
    total = total + 1
  end
  return {1, total, 0}
end
return {0, total, retry_after(KEYS[1], total, limit)}
"#,
    )
});

/// Creates or moves a session binding, keeping `created_at` and counting messages (see `merge_binding`); a
/// binding with another owner is left as it is.
///
/// KEYS[1] the binding; ARGV[1] the new binding as JSON, ARGV[2] TTL in ms, ARGV[3] now (unix seconds).
/// Returns the binding as stored (JSON). A corrupt previous value is replaced as if absent.
pub(crate) static BIND_SESSION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local binding = cjson.decode(ARGV[1])
local now = tonumber(ARGV[3])
local previous = redis.call('GET', KEYS[1])
local ok, prev = false, nil
if previous then ok, prev = pcall(cjson.decode, previous) end
if ok and type(prev) == 'table' and type(prev.created_at) == 'number' then
  -- Another client key's session stays as it is (an absent owner is cjson.null or nil on either side).
  local function owner(b) if type(b.owner) == 'string' then return b.owner end return false end
  if owner(prev) ~= owner(binding) then return previous end
  binding.created_at = prev.created_at
  binding.message_count = (tonumber(prev.message_count) or 0) + 1
else
  if (tonumber(binding.created_at) or 0) <= 0 then binding.created_at = now end
  binding.message_count = math.max(tonumber(binding.message_count) or 0, 1)
end
binding.last_accessed = now
local stored = cjson.encode(binding)
redis.call('SET', KEYS[1], stored, 'PX', ARGV[2])
return stored
"#,
    )
});

/// Claims a session binding (see `claim_binding`): stores it only when the session has no (readable) binding, or
/// when the binding is still the one the caller saw (same logical model, provider, model and key) and has the same
/// owner; an existing binding's `created_at` is kept and its count goes up by one.
///
/// KEYS[1] the binding; ARGV[1] the new binding as JSON, ARGV[2] TTL in ms, ARGV[3] now (unix seconds), ARGV[4] the
/// binding the caller saw as JSON, or empty. Returns the binding in force afterwards (JSON).
pub(crate) static CLAIM_SESSION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local binding = cjson.decode(ARGV[1])
local now = tonumber(ARGV[3])
local previous = redis.call('GET', KEYS[1])
local ok, prev = false, nil
if previous then ok, prev = pcall(cjson.decode, previous) end
if ok and type(prev) == 'table' and type(prev.created_at) == 'number' then
  local function owner(b) if type(b.owner) == 'string' then return b.owner end return false end
  if owner(prev) ~= owner(binding) or ARGV[4] == '' then return previous end
  local seen = cjson.decode(ARGV[4])
  if prev.logical_model ~= seen.logical_model or prev.provider_id ~= seen.provider_id
    or prev.model_id ~= seen.model_id or tonumber(prev.key_index) ~= tonumber(seen.key_index) then
    return previous
  end
  binding.created_at = prev.created_at
  binding.message_count = (tonumber(prev.message_count) or 0) + 1
else
  if (tonumber(binding.created_at) or 0) <= 0 then binding.created_at = now end
  binding.message_count = math.max(tonumber(binding.message_count) or 0, 1)
end
binding.last_accessed = now
local stored = cjson.encode(binding)
redis.call('SET', KEYS[1], stored, 'PX', ARGV[2])
return stored
"#,
    )
});

/// Pushes a context snippet, newest first, capped in entries and in bytes, owned by its first writer.
///
/// KEYS[1] the list of snippets, KEYS[2] its owner; ARGV[1] owner, ARGV[2] snippet JSON, ARGV[3] max entries,
/// ARGV[4] TTL in ms, ARGV[5] max bytes per session. Returns 1 when stored, 0 when the context belongs to another
/// owner. A list without an owner (written by hand, or its owner key lost) is taken over as new.
pub(crate) static PUSH_CONTEXT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if not owner then redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[4])
redis.call('LPUSH', KEYS[1], ARGV[2])
local max_entries, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[5])
local kept, bytes = 0, 0
for _, item in ipairs(redis.call('LRANGE', KEYS[1], 0, max_entries - 1)) do
  if bytes + #item > max_bytes then break end
  bytes = bytes + #item
  kept = kept + 1
end
if kept == 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('LTRIM', KEYS[1], 0, kept - 1)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return 1
"#,
    )
});

/// Checks every rate limit of a request (and its spending limit, if any) and, only when none refuses, counts it:
/// the request in each `rpm` window, a token reservation in each `tpm` window, a cost reservation on the spend
/// counter (`MemoryStore::admit_spending` does the same).
///
/// KEYS: the windows to check, in order, then the spend counter when there is one. ARGV[1] tokens to reserve,
/// ARGV[2] the number of windows `w`; then per window a pair: limit, kind (`r` counts 1 request, `t` reserves
/// tokens); with a spend counter, after those: its limit, the cost to reserve, its TTL in ms.
/// The tokens reserved are capped at what the tightest `tpm` window has left, the cost at what the limit has left.
/// Returns `{now, refused (0, or the 1-based index of the first refusing window), tokens reserved, then per
/// window: used, retry, then spend state (0 none, 1 reserved, 2 exhausted), spend before, cost reserved}`, where
/// `used` counts this request when admitted and `retry` is the seconds until a refusing window frees up (else 0).
/// A spend counter that is not a number fails the script (the caller then refuses: a budget fails closed).
pub(crate) static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    window_script(
        r#"
local reserve = tonumber(ARGV[1]) or 0
local windows = tonumber(ARGV[2]) or 0
local out = {NOW, 0, 0}
for k = 1, windows do
  local limit = tonumber(ARGV[1 + 2 * k]) or 0
  local total = used(KEYS[k])
  local retry = 0
  if total >= limit then
    if out[2] == 0 then out[2] = k end
    retry = retry_after(KEYS[k], total, limit)
  elseif ARGV[2 + 2 * k] == 't' and limit - total < reserve then
    reserve = limit - total
  end
  out[#out + 1] = total
  out[#out + 1] = retry
end
local spend_state, spent, cost = 0, 0, 0
if #KEYS > windows then
  local at = 3 + 2 * windows
  local limit = tonumber(ARGV[at]) or 0
  spent = tonumber(redis.call('GET', KEYS[windows + 1]) or '0')
  if spent == nil then return redis.error_reply('the spend counter is not a number') end
  if spent >= limit then
    spend_state = 2
  else
    spend_state = 1
    cost = math.min(tonumber(ARGV[at + 1]) or 0, limit - spent)
  end
end
if out[2] == 0 and spend_state ~= 2 then
  for k = 1, windows do
    local amount = 1
    if ARGV[2 + 2 * k] == 't' then amount = reserve end
    add(KEYS[k], amount)
    out[2 + 2 * k] = out[2 + 2 * k] + amount
  end
  out[3] = reserve
  if cost > 0 then
    -- Sent as an integer whatever the number formatting of the server's Lua (INCRBY refuses `1e+15`).
    redis.call('INCRBY', KEYS[windows + 1], string.format('%d', cost))
    redis.call('PEXPIRE', KEYS[windows + 1], ARGV[3 + 2 * windows + 2])
  end
else
  cost = 0
end
out[#out + 1] = spend_state
out[#out + 1] = spent
out[#out + 1] = cost
return out
"#,
    )
});

/// Replaces a cost reservation by the real cost on a spend counter, never below zero.
///
/// KEYS[1] the counter; ARGV[1] cost − reserved (may be negative), ARGV[2] TTL in ms. Returns the new total.
pub(crate) static SETTLE_SPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
if total < 0 then
  redis.call('SET', KEYS[1], 0)
  total = 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return total
"#,
    )
});

/// Replaces token reservations by the real usage in each `tpm` window (several requests' settlements at once).
///
/// KEYS: the token windows. ARGV[1] tokens used, then pairs: a second reservations were made at, the tokens
/// reserved then. Returns 1.
pub(crate) static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    window_script(
        r#"
local amount = tonumber(ARGV[1]) or 0
for k = 1, #KEYS do
  used(KEYS[k])
  for i = 2, #ARGV - 1, 2 do
    take_back(KEYS[k], tonumber(ARGV[i]) or 0, tonumber(ARGV[i + 1]) or 0)
  end
  add(KEYS[k], amount)
end
return 1
"#,
    )
});

/// Stores a cached answer within a byte bound shared by every replica, the oldest written going first (the memory
/// store's `response_cache.rs` does the same). Beside the entries, a sorted set (entry key → write time, ms) and a
/// hash (entry key → its bytes, and `""` → the total) keep the order and the sizes; both live at least as long as
/// the longest-lived entry, so when they expire every entry they counted has too. An entry that expired on its
/// own stays counted until it is evicted in turn (the bound is never exceeded, only reached early).
///
/// KEYS[1] the entry, KEYS[2] the order set, KEYS[3] the sizes hash (one slot on a cluster: `{cache}`).
/// ARGV[1] the value, ARGV[2] its TTL in ms, ARGV[3] the bound in bytes, ARGV[4] the entry's bytes (its key, without
/// the prefix, and its value: `response_cache::entry_bytes`, as the memory store counts). Returns 1 when stored, 0 when too large.
pub(crate) static CACHE_PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local size = tonumber(ARGV[4])
local ttl, max = tonumber(ARGV[2]), tonumber(ARGV[3])
if size > max then return 0 end
local total = tonumber(redis.call('HGET', KEYS[3], '') or '0') or 0
local old = tonumber(redis.call('HGET', KEYS[3], KEYS[1]) or '')
if old then
  total = total - old
  redis.call('ZREM', KEYS[2], KEYS[1])
end
while total + size > max do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #oldest == 0 then total = 0 break end
  local victim = oldest[1]
  total = total - (tonumber(redis.call('HGET', KEYS[3], victim) or '0') or 0)
  redis.call('ZREM', KEYS[2], victim)
  redis.call('HDEL', KEYS[3], victim)
  redis.call('DEL', victim)
end
if total < 0 then total = 0 end
local t = redis.call('TIME')
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZADD', KEYS[2], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), KEYS[1])
redis.call('HSET', KEYS[3], KEYS[1], size, '', total + size)
for i = 2, 3 do
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 1
"#,
    )
});

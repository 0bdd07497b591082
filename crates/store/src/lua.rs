//! The Lua scripts that make multi-step Redis updates atomic across replicas.

use std::sync::LazyLock;

use redis::Script;

/// A per-second sliding window (see `window.rs`, whose arithmetic this mirrors) kept in a hash second → amount.
///
/// KEYS[1] the window; ARGV[1] limit, ARGV[2] mode (`hit`: add 1 if under the limit; `check`: add nothing;
/// `add`: add ARGV[3] unconditionally), ARGV[3] amount for `add`.
/// Returns `{allowed (0/1), used (counting this hit), retry_after_secs}`.
/// The clock is Redis's own (`TIME`), so every replica sees the same window whatever its local clock says.
pub(crate) static RATE_WINDOW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- Redis < 5 must be told to replicate effects, or writes after TIME are refused.
if redis.replicate_commands then redis.replicate_commands() end
local window = 60
local now = tonumber(redis.call('TIME')[1])
local limit = tonumber(ARGV[1]) or 0
local mode = ARGV[2]
local fields = redis.call('HGETALL', KEYS[1])
local used, live, stale = 0, {}, {}
for i = 1, #fields, 2 do
  local second, n = tonumber(fields[i]), tonumber(fields[i + 1])
  if second == nil or n == nil or second + window <= now then
    stale[#stale + 1] = fields[i]
  else
    used = used + n
    live[#live + 1] = {second, n}
  end
end
if #stale > 0 then redis.call('HDEL', KEYS[1], unpack(stale)) end
local amount = 0
if mode == 'add' then
  amount = tonumber(ARGV[3]) or 0
elseif mode == 'hit' and used < limit then
  amount = 1
end
if amount > 0 then
  redis.call('HINCRBY', KEYS[1], now, amount)
  redis.call('EXPIRE', KEYS[1], window + 1)
  used = used + amount
end
if mode == 'add' or (mode == 'hit' and amount > 0) or (mode == 'check' and used < limit) then
  return {1, used, 0}
end
table.sort(live, function(a, b) return a[1] < b[1] end)
local left, retry = used, window
for _, bucket in ipairs(live) do
  left = left - bucket[2]
  if left < limit then
    retry = bucket[1] + window - now
    break
  end
end
if retry < 1 then retry = 1 end
return {0, used, retry}
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

/// Checks every rate limit of a request and, only when none refuses, counts it: the request in each `rpm` window,
/// a token reservation in each `tpm` window (see `window.rs` and `MemoryStore::admit`, which it mirrors).
///
/// KEYS: the windows to check, in order (each a hash second → amount). ARGV[1] tokens to reserve; then per key a
/// pair: limit, kind (`r` counts 1 request, `t` reserves tokens).
/// Returns `{now, refused (0, or the 1-based index of the first refusing key), then per key: used, retry}`, where
/// `used` counts this request when admitted and `retry` is the seconds until a refusing window frees up (else 0).
/// The clock is Redis's own (`TIME`), so every replica sees the same window whatever its local clock says.
pub(crate) static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.replicate_commands then redis.replicate_commands() end
local window = 60
local now = tonumber(redis.call('TIME')[1])
local reserve = tonumber(ARGV[1]) or 0
local out = {now, 0}
local used_of = {}
for k = 1, #KEYS do
  local limit = tonumber(ARGV[2 * k]) or 0
  local fields = redis.call('HGETALL', KEYS[k])
  local used, live, stale = 0, {}, {}
  for i = 1, #fields, 2 do
    local second, n = tonumber(fields[i]), tonumber(fields[i + 1])
    if second == nil or n == nil or second + window <= now then
      stale[#stale + 1] = fields[i]
    else
      used = used + n
      live[#live + 1] = {second, n}
    end
  end
  if #stale > 0 then redis.call('HDEL', KEYS[k], unpack(stale)) end
  local retry = 0
  if used >= limit then
    if out[2] == 0 then out[2] = k end
    table.sort(live, function(a, b) return a[1] < b[1] end)
    local left = used
    retry = window
    for _, bucket in ipairs(live) do
      left = left - bucket[2]
      if left < limit then
        retry = bucket[1] + window - now
        break
      end
    end
    if retry < 1 then retry = 1 end
  end
  used_of[k] = used
  out[#out + 1] = used
  out[#out + 1] = retry
end
if out[2] == 0 then
  for k = 1, #KEYS do
    local amount = 1
    if ARGV[2 * k + 1] == 't' then amount = reserve end
    if amount > 0 then
      redis.call('HINCRBY', KEYS[k], now, amount)
      redis.call('EXPIRE', KEYS[k], window + 1)
      out[1 + 2 * k] = used_of[k] + amount
    end
  end
end
return out
"#,
    )
});

/// Replaces token reservations by the real usage in each `tpm` window (several requests' settlements at once).
///
/// KEYS: the token windows. ARGV[1] tokens used, then pairs: a second reservations were made at, the tokens
/// reserved then. Returns 1.
pub(crate) static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.replicate_commands then redis.replicate_commands() end
local window = 60
local now = tonumber(redis.call('TIME')[1])
local used = tonumber(ARGV[1]) or 0
for k = 1, #KEYS do
  for i = 2, #ARGV - 1, 2 do
    local at, reserved = ARGV[i], tonumber(ARGV[i + 1]) or 0
    if reserved > 0 and (tonumber(at) or 0) + window > now then
      local left = tonumber(redis.call('HGET', KEYS[k], at) or '0') or 0
      if left <= reserved then
        redis.call('HDEL', KEYS[k], at)
      else
        redis.call('HINCRBY', KEYS[k], at, -reserved)
      end
    end
  end
  if used > 0 then
    redis.call('HINCRBY', KEYS[k], now, used)
    redis.call('EXPIRE', KEYS[k], window + 1)
  end
end
return 1
"#,
    )
});

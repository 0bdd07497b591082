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

/// Creates or moves a session binding, keeping `created_at` and counting messages (see `merge_binding`).
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

/// Pushes a context snippet, newest first, capped, owned by its first writer.
///
/// KEYS[1] the list of snippets, KEYS[2] its owner; ARGV[1] owner, ARGV[2] snippet JSON, ARGV[3] max entries,
/// ARGV[4] TTL in ms. Returns 1 when stored, 0 when the context belongs to another owner.
pub(crate) static PUSH_CONTEXT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[4])
redis.call('LPUSH', KEYS[1], ARGV[2])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[3]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"#,
    )
});

-- Sliding window as an exact log of admissions, with an optional concurrency
-- lease, decided atomically on Redis TIME (integer microseconds). At most
-- `limit` admissions in any window (x - W, x]; denied requests are not
-- logged. A caller that may wait gets the time at which the admission it
-- displaces leaves the window, and that future admission is logged now.
--
-- KEYS[1]  log: zset member -> admission time us
-- KEYS[2]  leases: zset lease id -> expiry us (only when ARGV[6] > 0; absent
--          otherwise)
-- ARGV[1]  window W in us
-- ARGV[2]  limit
-- ARGV[3]  cost (admissions taken)
-- ARGV[4]  longest acceptable wait in us; -1: any
-- ARGV[5]  margin in us: only lengthens TTLs
-- ARGV[6]  max_concurrent; 0: no concurrency limit
-- ARGV[7]  request id, unique per call: members are "<id>:<n>"
-- ARGV[8]  lease time to live in us
-- ARGV[9..] lease ids released on KEYS[2], removed before deciding (as in
--          token_bucket.lua)
-- Returns 0                      admitted now,
--         {1, wait_us, at_us}    admitted at at_us, sleep wait_us first (> 0),
--         -retry_after_us        refused by the window, nothing logged (< 0),
--         {2, 0, 0}              refused: every slot is leased.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local max_wait = tonumber(ARGV[4])
local margin = tonumber(ARGV[5])
local max_concurrent = tonumber(ARGV[6])

if max_concurrent > 0 then
  if #ARGV > 8 then
    redis.call('ZREM', KEYS[2], unpack(ARGV, 9))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= max_concurrent then
    return {2, 0, 0}
  end
end

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
local at = now
if n > 0 then
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  at = math.max(at, tonumber(last[2]))
  local i = n + cost - 1 - limit
  if i >= 0 then
    local displaced = redis.call('ZRANGE', KEYS[1], i, i, 'WITHSCORES')
    at = math.max(at, tonumber(displaced[2]) + window)
  end
end
local wait = at - now
if max_wait >= 0 and wait > max_wait then
  return -wait
end
local score = string.format('%.0f', at)
local args = {}
for k = 1, cost do
  args[2 * k - 1] = score
  args[2 * k] = ARGV[7] .. ':' .. k
end
redis.call('ZADD', KEYS[1], unpack(args))
-- The log vanishes once its newest admission has left the window.
redis.call('PEXPIRE', KEYS[1], math.ceil((at + window - now + margin) / 1000))

if max_concurrent > 0 then
  local expiry = now + wait + tonumber(ARGV[8])
  redis.call('ZADD', KEYS[2], string.format('%.0f', expiry), ARGV[7])
  local ttl = math.ceil((expiry - now + margin) / 1000)
  if redis.call('PTTL', KEYS[2]) < ttl then
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
end
if wait == 0 then
  return 0
end
return {1, wait, at}

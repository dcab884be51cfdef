-- Sliding window as an exact log of admissions, with an optional concurrency
-- lease, decided atomically on Redis TIME (integer microseconds). At most
-- `limit` admissions in any window (x - W, x]; denied requests are not
-- logged. A caller that may wait gets the time at which the admission it
-- displaces leaves the window, and that future admission is logged now.
--
-- KEYS[1]  log: zset "<through>:<cost>:<id>" -> admission time us, one member
--          per admission (through: units logged up to and including it, as
--          below)
-- KEYS[2]  leases: zset lease id -> expiry us (only when ARGV[6] > 0; absent
--          otherwise)
-- ARGV[1]  window W in us
-- ARGV[2]  limit
-- ARGV[3]  cost (admissions taken)
-- ARGV[4]  longest acceptable wait in us; -1: any
-- ARGV[5]  margin in us: only lengthens TTLs
-- ARGV[6]  max_concurrent; 0: no concurrency limit
-- ARGV[7]  request id, unique per call: names the log entry and the lease
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

-- Expired leases are dropped only when they would make the set look full
-- (as in token_bucket.lua); held = 0: the set is new.
local held = 0
if max_concurrent > 0 then
  if #ARGV > 8 then
    redis.call('ZREM', KEYS[2], unpack(ARGV, 9))
  end
  held = redis.call('ZCARD', KEYS[2])
  if held >= max_concurrent then
    held = held - redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
    if held >= max_concurrent then
      return {2, 0, 0}
    end
  end
end

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
-- An entry per admission (not per unit), ordered by time, then by `through`:
-- the running total of units logged up to and including it, in hex after a
-- letter giving its length (so that equal times order by it).
local function through(m)
  return tonumber(string.sub(m, 2, string.byte(m) - 95), 16)
end
local function head(total)
  local h = string.format('%x', total)
  return string.char(96 + #h) .. h
end
local top, base = 0, 0
local at = now
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[1] then
  top = through(last[1])
  at = math.max(at, tonumber(last[2]))
  -- Unit u must leave the window first (if base < u <= top): the first
  -- entry whose running total reaches it. With unit costs it is entry
  -- u - base - 1, which the first probe checks; otherwise a binary search by
  -- rank. base (what was logged before the first entry) is read only when
  -- u > 0, i.e. once the log has held more than limit - cost units since it
  -- was last empty.
  local u = top + cost - limit
  local first
  if u > 0 then
    first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    base = through(first[1]) - tonumber(string.match(first[1], ':(%d+):'))
  end
  if u > base then
    local hi = math.min(u - base - 1, redis.call('ZCARD', KEYS[1]) - 1) -- reaches u
    local hit
    if hi == 0 then
      hit = tonumber(first[2])
    else
      local pair = redis.call('ZRANGE', KEYS[1], hi - 1, hi, 'WITHSCORES')
      if through(pair[1]) < u then
        hit = tonumber(pair[4])
      else
        local lo = 0
        hi, hit = hi - 1, tonumber(pair[2])
        while lo < hi do
          local mid = math.floor((lo + hi) / 2)
          local e = redis.call('ZRANGE', KEYS[1], mid, mid, 'WITHSCORES')
          if through(e[1]) >= u then
            hi, hit = mid, tonumber(e[2])
          else
            lo = mid + 1
          end
        end
      end
    end
    at = math.max(at, hit + window)
  end
end
local wait = at - now
if max_wait >= 0 and wait > max_wait then
  return -wait
end
if top + cost > 4503599627370496 then
  -- 2^52 units logged without a break: count again from the first entry,
  -- so that running totals stay exact integers (once in 2^52 units).
  local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  redis.call('DEL', KEYS[1])
  for k = 1, #all, 2 do
    local m = all[k]
    redis.call('ZADD', KEYS[1], all[k + 1],
               head(through(m) - base) .. string.sub(m, string.byte(m) - 94))
  end
  top = top - base
end
redis.call('ZADD', KEYS[1], string.format('%.0f', at),
           head(top + cost) .. ':' .. cost .. ':' .. ARGV[7])
-- The log vanishes once its newest admission has left the window.
redis.call('PEXPIRE', KEYS[1], math.ceil((at + window - now + margin) / 1000))

if max_concurrent > 0 then
  local expiry = now + wait + tonumber(ARGV[8])
  redis.call('ZADD', KEYS[2], string.format('%.0f', expiry), ARGV[7])
  local ttl = math.ceil((expiry - now + margin) / 1000)
  if held == 0 or redis.call('PTTL', KEYS[2]) < ttl then
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
end
if wait == 0 then
  return 0
end
return {1, wait, at}

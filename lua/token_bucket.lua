-- Token bucket (GCRA) with an optional concurrency lease, decided atomically.
-- Time comes from Redis TIME, in integer microseconds; the client clock never
-- enters a decision. A caller that may wait reserves its future slot here and
-- sleeps the returned wait: one round trip per decision.
--
-- KEYS[1]  bucket: string, the theoretical arrival time (TAT), in us
-- KEYS[2]  leases: zset lease id -> expiry us (only when ARGV[6] > 0)
-- ARGV[1]  emission interval T in us (1 / rate, rounded up)
-- ARGV[2]  burst
-- ARGV[3]  cost
-- ARGV[4]  longest acceptable wait in us; -1: any
-- ARGV[5]  margin in us: only lengthens TTLs
-- ARGV[6]  max_concurrent; 0: no concurrency limit
-- ARGV[7]  lease id
-- ARGV[8]  lease time to live in us
-- Returns {1, wait_us, tat_after} admitted (sleep wait_us first),
--         {0, retry_after_us, 0}  refused by the rate, nothing consumed,
--         {2, 0, 0}               refused: every slot is leased.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local cost = tonumber(ARGV[3])
local max_wait = tonumber(ARGV[4])
local margin = tonumber(ARGV[5])
local max_concurrent = tonumber(ARGV[6])

if max_concurrent > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= max_concurrent then
    return {2, 0, 0}
  end
end

local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
local new_tat = tat + cost * interval
local wait = new_tat - tonumber(ARGV[2]) * interval - now
if wait < 0 then
  wait = 0
end
if max_wait >= 0 and wait > max_wait then
  return {0, wait, 0}
end
-- The key vanishes once the bucket is full again.
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX',
           math.ceil((new_tat - now + margin) / 1000))

if max_concurrent > 0 then
  local expiry = now + wait + tonumber(ARGV[8])
  redis.call('ZADD', KEYS[2], string.format('%.0f', expiry), ARGV[7])
  local ttl = math.ceil((expiry - now + margin) / 1000)
  if redis.call('PTTL', KEYS[2]) < ttl then
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
end
return {1, wait, new_tat}

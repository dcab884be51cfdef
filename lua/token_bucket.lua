-- Token bucket (GCRA) with an optional concurrency lease, decided atomically.
-- Time comes from Redis TIME, in integer microseconds; the client clock never
-- enters a decision. A caller that may wait reserves its future slot here and
-- sleeps the returned wait: one round trip per decision.
--
-- KEYS[1]  bucket: string, the theoretical arrival time (TAT), in us
-- KEYS[2]  leases: zset lease id -> expiry us (only when ARGV[6] > 0; absent
--          otherwise, as are ARGV[7] and ARGV[8])
-- ARGV[1]  emission interval T in us (1 / rate, rounded up)
-- ARGV[2]  burst
-- ARGV[3]  cost
-- ARGV[4]  longest acceptable wait in us; -1: any
-- ARGV[5]  margin in us: only lengthens TTLs
-- ARGV[6]  max_concurrent; 0: no concurrency limit
-- ARGV[7]  lease id
-- ARGV[8]  lease time to live in us
-- ARGV[9..] lease ids released on KEYS[2], removed before deciding (the
--          client folds releases into the next decision on their key instead
--          of sending a ZREM of its own: one command where there were two)
-- Returns 0                       admitted now,
--         {1, wait_us, tat_after} admitted, sleep wait_us first (> 0),
--         -retry_after_us         refused by the rate, nothing consumed (< 0),
--         {2, 0, 0}               refused: every slot is leased.
-- (The common answers are one integer: no table for Lua to build and
-- convert, one reply object for the client to allocate instead of four.)
--
-- This runs once per decision, so it is written for the server's time
-- (bench/run_script_bench.sh measures it): a refusal reads and returns
-- (a full lease set is first pruned of its expired leases), an admission
-- writes once, and the TTL is rewritten only when it must grow.
-- Strings become numbers by arithmetic (one strtod; tonumber() does two), and
-- numbers go to redis.call as strings made with %d (a number argument costs
-- a %.17g conversion).
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]

-- Leases: expired ones (holders that crashed) are dropped only when they
-- would make the set look full; below the limit they cannot change the
-- answer, and the set's TTL outlives its newest lease anyway. So an admission
-- counts with one ZCARD, and `held` = 0 says the set is new (no TTL yet).
local max_concurrent = 0
local held = 0
if ARGV[6] ~= '0' then
  max_concurrent = tonumber(ARGV[6])
  if max_concurrent > 0 then
    if #ARGV > 8 then
      redis.call('ZREM', KEYS[2], unpack(ARGV, 9))
    end
    held = redis.call('ZCARD', KEYS[2])
    if held >= max_concurrent then
      held = held - redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', now))
      if held >= max_concurrent then
        return {2, 0, 0}
      end
    end
  end
end

local interval = ARGV[1] + 0
local stored = redis.call('GET', KEYS[1])
local tat = now
if stored then
  stored = stored + 0
  if stored > now then
    tat = stored
  end
end
local new_tat = tat + ARGV[3] * interval
local wait = new_tat - ARGV[2] * interval - now
if wait <= 0 then
  wait = 0 -- admitted whatever the longest acceptable wait
else
  local max_wait = ARGV[4] + 0
  if max_wait >= 0 and wait > max_wait then
    return -wait
  end
end

-- The key vanishes once the bucket is full again (a missing key is a full
-- bucket), never before. Its expiry is on a 5 ms grid: the first grid point at
-- least max(margin - 5 ms, 5 ms) after the TAT, so between 5 ms and
-- max(margin, 10 ms) after it. Whoever wrote the key, it therefore lives to
-- at least 5 ms past the end of the 5 ms cell its TAT is in; while the new
-- TAT stays in the same cell, that covers it and the TTL is kept as it is.
-- (undo.lua only moves the TAT back, under KEEPTTL: still covered.)
local value = string.format('%d', new_tat)
if stored and math.ceil(new_tat / 5000) == math.ceil(stored / 5000) then
  redis.call('SET', KEYS[1], value, 'KEEPTTL')
else
  local after = ARGV[5] - 5000
  if after < 5000 then
    after = 5000
  end
  redis.call('SET', KEYS[1], value, 'PXAT',
             string.format('%d', 5 * math.ceil((new_tat + after) / 5000)))
end

if max_concurrent > 0 then
  local expiry = now + wait + tonumber(ARGV[8])
  redis.call('ZADD', KEYS[2], string.format('%.0f', expiry), ARGV[7])
  local ttl = math.ceil((expiry - now + ARGV[5]) / 1000)
  if held == 0 or redis.call('PTTL', KEYS[2]) < ttl then
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
end
if wait == 0 then
  return 0
end
return {1, wait, new_tat}

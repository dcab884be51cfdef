-- Reference for bench/run_script_bench.sh: the usual Redis token bucket, as
-- most libraries and blog posts write it. A hash holds the tokens left and the
-- time they were counted; every call refills by the time elapsed, takes `cost`
-- tokens if there are enough, writes both fields back and re-arms the TTL
-- (the time to refill from empty), whether it admitted or not.
--
--   TIME; HMGET key tokens ts; refill; HSET key tokens .. ts ..; PEXPIRE key ttl
--
-- Same inputs and reply shape as lua/token_bucket.lua (without the
-- concurrency lease, and without reservations: a request is admitted now or
-- refused), so that both run from one redis-benchmark command line:
--
-- KEYS[1]  bucket: hash {tokens, ts (us)}
-- ARGV[1]  emission interval T in us (1 / rate): one token per T
-- ARGV[2]  burst (capacity)
-- ARGV[3]  cost
-- ARGV[4]  (ignored: reservations are not part of the usual form)
-- ARGV[5]  margin in us, added to the TTL
-- Returns {1, 0, tokens_left} admitted, {0, retry_after_us, 0} refused.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local margin = tonumber(ARGV[5])

local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) / interval)
end

local allowed = 0
local retry = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry = math.ceil((cost - tokens) * interval)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((burst * interval + margin) / 1000))
if allowed == 1 then
  return {1, 0, tokens}
end
return {0, retry, 0}

-- Extends a live lease to now + ttl (Redis TIME, us). A lease that expired or
-- was released is not brought back: returns 0 and the holder knows.
--
-- KEYS[1]  leases: zset lease id -> expiry us
-- ARGV[1]  lease id
-- ARGV[2]  lease time to live in us
-- ARGV[3]  margin in us: only lengthens TTLs
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local expiry = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if not expiry or expiry <= now then
  return 0
end
local new_expiry = math.max(expiry, now + tonumber(ARGV[2]))
redis.call('ZADD', KEYS[1], 'XX', string.format('%.0f', new_expiry), ARGV[1])
local ttl = math.ceil((new_expiry - now + tonumber(ARGV[3])) / 1000)
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1

-- A concurrency slot as a lease: a member of a zset scored by its expiry in
-- Redis TIME microseconds. Expired leases (crashed holders) are reclaimed
-- when they would make the set look full (below the limit they cannot change
-- the answer: one ZCARD decides, and the set's TTL outlives its newest lease);
-- a live holder renews its lease (renew_lease.lua). held = 0: the set is new,
-- with no TTL yet.
--
-- KEYS[1]  leases: zset lease id -> expiry us
-- ARGV[1]  max_concurrent
-- ARGV[2]  lease id
-- ARGV[3]  lease time to live in us
-- ARGV[4]  margin in us: only lengthens TTLs
-- ARGV[5..] lease ids released on KEYS[1], removed before deciding (as in
--          token_bucket.lua)
-- Returns 0 leased, {2, 0, 0} every slot is leased.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if #ARGV > 4 then
  redis.call('ZREM', KEYS[1], unpack(ARGV, 5))
end
local max_concurrent = tonumber(ARGV[1])
local held = redis.call('ZCARD', KEYS[1])
if held >= max_concurrent then
  held = held - redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if held >= max_concurrent then
    return {2, 0, 0}
  end
end
local expiry = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], string.format('%.0f', expiry), ARGV[2])
local ttl = math.ceil((expiry - now + tonumber(ARGV[4])) / 1000)
if held == 0 or redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 0

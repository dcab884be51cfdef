-- Gives back what a cancelled waiter reserved, where that can be done
-- exactly: the bucket's TAT is rolled back only if nothing was decided after
-- this reservation (otherwise the slot stays spent: never handed out twice);
-- the window's entry and the lease are simply removed.
--
-- KEYS[1]  bucket (string) or log (zset); KEYS[2] leases (optional)
-- ARGV[1]  "tb" or "sw"
-- ARGV[2]  tb: the TAT this reservation set; sw: the request id
-- ARGV[3]  tb: cost * interval in us; sw: cost
-- ARGV[4]  lease id ("" when none)
-- ARGV[5]  sw: the reserved admission time in us (the entry's score)
if ARGV[1] == 'tb' then
  local tat = redis.call('GET', KEYS[1])
  if tat and tat == ARGV[2] then
    local back = tonumber(ARGV[2]) - tonumber(ARGV[3])
    redis.call('SET', KEYS[1], string.format('%.0f', back), 'KEEPTTL')
  end
else
  -- The entry "<through>:<cost>:<id>" at its time; the entries after it
  -- count its units in their running totals, which drop by its cost (see
  -- sliding_window.lua). That rewrites every later entry, so only while at
  -- most 256 entries lie at or after its time: behind a deeper queue (a
  -- mass cancellation would cost the server quadratic time) its units stay
  -- spent until they leave the window, as the bucket's do once a later
  -- reservation was made.
  if redis.call('ZCOUNT', KEYS[1], ARGV[5], '+inf') > 256 then
    if ARGV[4] ~= '' then
      redis.call('ZREM', KEYS[2], ARGV[4])
    end
    return 1
  end
  local suffix = ':' .. ARGV[3] .. ':' .. ARGV[2]
  local cost = tonumber(ARGV[3])
  local found = false
  local from = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[5], '+inf', 'WITHSCORES')
  for k = 1, #from, 2 do
    local m = from[k]
    if found then
      local h = string.format('%x', tonumber(string.sub(m, 2, string.byte(m) - 95), 16) - cost)
      redis.call('ZREM', KEYS[1], m)
      redis.call('ZADD', KEYS[1], from[k + 1],
                 string.char(96 + #h) .. h .. string.sub(m, string.byte(m) - 94))
    elseif string.sub(m, -#suffix) == suffix then
      found = true
      redis.call('ZREM', KEYS[1], m)
    end
  end
end
if ARGV[4] ~= '' then
  redis.call('ZREM', KEYS[2], ARGV[4])
end
return 1

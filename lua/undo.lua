-- Gives back what a cancelled waiter reserved, where that can be done
-- exactly: the bucket's TAT is rolled back only if nothing was decided after
-- this reservation (otherwise the slot stays spent: never handed out twice);
-- window entries and the lease are simply removed.
--
-- KEYS[1]  bucket (string) or log (zset); KEYS[2] leases (optional)
-- ARGV[1]  "tb" or "sw"
-- ARGV[2]  tb: the TAT this reservation set; sw: the request id
-- ARGV[3]  tb: cost * interval in us; sw: cost
-- ARGV[4]  lease id ("" when none)
if ARGV[1] == 'tb' then
  local tat = redis.call('GET', KEYS[1])
  if tat and tat == ARGV[2] then
    local back = tonumber(ARGV[2]) - tonumber(ARGV[3])
    redis.call('SET', KEYS[1], string.format('%.0f', back), 'KEEPTTL')
  end
else
  for k = 1, tonumber(ARGV[3]) do
    redis.call('ZREM', KEYS[1], ARGV[2] .. ':' .. k)
  end
end
if ARGV[4] ~= '' then
  redis.call('ZREM', KEYS[2], ARGV[4])
end
return 1

-- Reads a limiter key's state without changing it (get_state).
--
-- KEYS[1]  bucket (string) or log (zset); KEYS[2] leases (zset)
-- ARGV[1]  "tb", "sw" or "cc"
-- ARGV[2]  tb: interval us; sw: window us
-- ARGV[3]  tb: burst; sw: limit
-- Returns {remaining, retry_after_us, reset_after_us, leases_held}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local held = redis.call('ZCOUNT', KEYS[2], '(' .. string.format('%.0f', now), '+inf')
if ARGV[1] == 'tb' then
  local interval = tonumber(ARGV[2])
  local burst = tonumber(ARGV[3])
  local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now)
  local remaining = math.floor((now + burst * interval - tat) / interval)
  remaining = math.max(0, math.min(burst, remaining))
  local retry = math.max(0, tat + interval - burst * interval - now)
  return {remaining, retry, tat - now, held}
elseif ARGV[1] == 'sw' then
  local window = tonumber(ARGV[2])
  local limit = tonumber(ARGV[3])
  -- Entries "<through>:<cost>:<id>" (see sliding_window.lua).
  local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%.0f', now - window),
                          '+inf', 'WITHSCORES')
  if #live == 0 then
    return {limit, 0, 0, held}
  end
  local function through(m)
    return tonumber(string.sub(m, 2, string.byte(m) - 95), 16)
  end
  local base = through(live[1]) - tonumber(string.match(live[1], ':(%d+):'))
  local n = through(live[#live - 1]) - base
  local last = tonumber(live[#live])
  local retry = math.max(0, last - now)
  if n >= limit then
    -- When unit n - limit + 1 (of the live ones) leaves the window.
    local u = base + n - limit + 1
    for k = 1, #live, 2 do
      if through(live[k]) >= u then
        retry = math.max(retry, tonumber(live[k + 1]) + window - now)
        break
      end
    end
  end
  local remaining = 0
  if last <= now then
    remaining = math.max(0, limit - n)
  end
  return {remaining, retry, last + window - now, held}
end
return {0, 0, 0, held}

-- A floor, not a limiter: the calls every admitting token-bucket decision on a
-- missing or expired key must make (TIME; GET; SET with a TTL), with constant
-- strings and no logic. bench/run_script_bench.sh --script floor_px=<this>
-- shows how far a real script's own Lua work is from it.
local t = redis.call('TIME')
local v = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], '1795818823304853', 'PX', '11')
return {1, 0, 0}

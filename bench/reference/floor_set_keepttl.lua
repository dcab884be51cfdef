-- A floor, not a limiter (and not correct: a new key gets no TTL): TIME; GET;
-- SET ... KEEPTTL with constant strings, the cheapest conceivable admission.
-- bench/run_script_bench.sh --script floor_keepttl=<this>
local t = redis.call('TIME')
local v = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], '1795818823304853', 'KEEPTTL')
return {1, 0, 0}

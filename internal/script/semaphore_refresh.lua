-- semaphore refresh: set a permit's expiry to now + ttl only while it is still held by this value. One round trip.
-- Keys and messages: see semaphore_lib.lua.
-- ARGV[1] the permit's value, ARGV[2] ttl in ms (> 0), ARGV[3] PUBLISH or SPUBLISH, ARGV[4] the caller's limit,
-- ARGV[5] the prefix of the processes' channels.
-- Returns 1 when refreshed, 0 when the permit was not held by this value (expired, released, or never taken).
redis.replicate_commands()

local t, now = server_time()
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
  return 0
end
if tonumber(score) <= now then
  -- Expired: its place is free already; reclaim the entry.
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[1])
keep_until(KEYS[1], now + ttl, ttl)
if now + ttl < tonumber(score) then
  -- The first in line waits for the old expiry at the latest; tell it the new one.
  tell_first(ARGV[5], ARGV[3], now, tonumber(ARGV[4]))
end
return 1

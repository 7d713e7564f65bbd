-- semaphore refresh: set a permit's expiry to now + ttl only while it is still held by this value. One round trip.
-- Keys and messages: see semaphore_lib.lua.
-- ARGV[1] the permit's value, ARGV[2] ttl in ms (> 0), ARGV[3] PUBLISH or SPUBLISH, ARGV[4] the caller's limit,
-- ARGV[5] the prefix of the processes' channels.
-- Returns 1 when refreshed, 0 when the permit was not held by this value (expired, released, or never taken).
-- Reads and checks come before the first write (see guard.lua): a refused or failed call leaves nothing behind.
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
local sooner = now + ttl < tonumber(score)
-- The commands that may follow the first write (ZADD); the first in line waits for the old expiry at the latest,
-- and a sooner one is told to it (tell_first).
allow('PTTL', KEYS[1])
allow('PEXPIREAT', KEYS[1], now)
if sooner then
  allow('ZRANGE', KEYS[1], 0, 0)
  allow('ZCARD', KEYS[1])
end
redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[1])
keep_until(KEYS[1], now + ttl, ttl)
if sooner then
  tell_first(ARGV[5], ARGV[3], now, tonumber(ARGV[4]))
end
return 1

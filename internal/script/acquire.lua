-- acquire: take the lock if it is free and hand out the next fencing token. One round trip.
-- KEYS[1] lock key, KEYS[2] fencing counter.
-- ARGV[1] the holder's value (token and metadata), ARGV[2] ttl in ms, ARGV[3] ttl of the fencing counter in ms.
-- Returns {1, fence} when the lock was taken, {0, pttl} when another holds it (pttl -1: the key has no expiry).
redis.replicate_commands()

-- Read the counter before any write: a counter of another type raises WRONGTYPE here, with nothing changed.
local counter = tonumber(redis.call('GET', KEYS[2]) or '0')
if not counter then
  return redis.error_reply('ERR keyward: fencing counter ' .. KEYS[2] .. ' is not an integer')
end

if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  -- SET NX answers nil for a key of any type; GET raises WRONGTYPE for a key that is not a string, so a list
  -- or hash under the lock's name is reported as an error instead of looking like a held lock.
  redis.call('GET', KEYS[1])
  return {0, redis.call('PTTL', KEYS[1])}
end

-- The fence never goes backwards: it is at least one more than the last one handed out, and at least the
-- server's clock in microseconds, so a server restarted without persistence (counter forgotten) still hands
-- out larger tokens, as long as its clock did not step back. The counter may therefore expire.
local t = redis.call('TIME')
local fence = math.max(counter + 1, tonumber(t[1]) * 1000000 + tonumber(t[2]))
redis.call('SET', KEYS[2], string.format('%d', fence), 'PX', ARGV[3])
return {1, fence}

-- acquire: take the lock if it is free, or reserved for this waiter, and hand out a fencing token.
-- KEYS[1] lock key, KEYS[2] queue of waiting processes (sorted set, by arrival), KEYS[3] fencing counter.
-- ARGV[1] the holder's value (token and metadata), ARGV[2] ttl in ms, ARGV[3] ttl of the fencing counter in ms for
-- a quorum lock, which sets it to the fence; '' for a lock on one server, which only reads it (see fence.lua),
-- ARGV[4] the waiting process's id ('' for a plain try that does not queue), ARGV[5] ttl of the
-- queue in ms, ARGV[6] a floor for the fence ('' for none): the fence handed out is then above it.
-- Returns {1, fence} when the lock was taken, {0, pttl} when another holds it (pttl -1: the key has no expiry).
-- Reads and checks come before the first write (see guard.lua): a refused or failed call leaves nothing behind.

-- GET raises WRONGTYPE for a key that is not a string: a list or hash under the lock's name is reported as an
-- error instead of looking like a held lock (SET NX alone would answer nil for it).
local current = redis.call('GET', KEYS[1])
local waiter = ARGV[4]
-- The lock may already hold this very value: the client resent the command after a dropped connection, and the
-- first one had taken the lock. That is an acquisition too (with a fresh ttl and fence), not "taken by another".
if current and current ~= ARGV[1] and not (waiter ~= '' and current == 'reserved:' .. waiter) then
  local pttl = redis.call('PTTL', KEYS[1])
  if waiter ~= '' then
    -- Join the queue once (NX keeps the place of an earlier try); every try keeps the queue alive. ZADD raises
    -- WRONGTYPE for a queue of another type as the first write.
    local t = redis.call('TIME')
    allow('PEXPIRE', KEYS[2], ARGV[5])
    redis.call('ZADD', KEYS[2], 'NX', t[1] .. string.format('%06d', tonumber(t[2])), waiter)
    redis.call('PEXPIRE', KEYS[2], ARGV[5])
  end
  return {0, pttl}
end

local t = redis.call('TIME')
local fence, set_fence = next_fence(KEYS[3], t, ARGV[3], tonumber(ARGV[6]))
if not fence then
  return set_fence
end
-- ZSCORE raises WRONGTYPE for a queue of another type.
local queued = waiter ~= '' and redis.call('ZSCORE', KEYS[2], waiter)
if queued then
  allow('ZREM', KEYS[2], waiter)
end

redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] ~= '' then
  redis.call(unpack(set_fence))
end
if queued then
  redis.call('ZREM', KEYS[2], waiter)
end
return {1, fence}

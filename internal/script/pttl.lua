-- pttl: the remaining ttl in ms while the lock holds this holder's value. One round trip.
-- KEYS[1] lock key. ARGV[1] the holder's value.
-- Returns the PTTL (-1: no expiry), or -3 when the lock is not held by this value.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -3
end
return redis.call('PTTL', KEYS[1])

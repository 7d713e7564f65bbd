-- refresh: set a new ttl only while the lock still holds this holder's value. One round trip.
-- KEYS[1] lock key. ARGV[1] the holder's value, ARGV[2] new ttl in ms (> 0: PEXPIRE 0 would delete the key).
-- Returns 1 when refreshed, 0 when the lock was not held by this value.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])

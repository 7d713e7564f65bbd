-- release: delete the lock only while it still holds this holder's value, and announce the release. One round trip.
-- KEYS[1] lock key, KEYS[2] release channel. ARGV[1] the holder's value, ARGV[2] PUBLISH or SPUBLISH.
-- Returns 1 when released, 0 when the lock was not held by this value (expired, or taken by another).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call(ARGV[2], KEYS[2], '')
return 1

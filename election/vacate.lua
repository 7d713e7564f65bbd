-- vacate: delete the record of a term that ended, unless another term holds it, and announce the vacancy.
-- One round trip.
-- KEYS[1] the election's record, KEYS[2] the channel its changes are announced on. ARGV[1] the term.
-- Returns 1 when the record was deleted, 0 when it held another term (or nothing) and was left alone.
-- Whatever can be refused comes before the only write: a vacancy that observers cannot be told of is refused
-- with NOPERM and deletes nothing (the record then expires with the lease).
local current = redis.call('GET', KEYS[1])
if not current or tonumber(string.match(current, '^%d+')) ~= tonumber(ARGV[1]) then
  return 0
end
local msg = 'vacated ' .. ARGV[1]
-- redis.acl_check_cmd is Redis 7's; older servers and miniredis skip the check.
if redis.acl_check_cmd and not redis.acl_check_cmd('PUBLISH', KEYS[2], msg) then
  return redis.error_reply("NOPERM this user has no permissions to run the 'publish' command on " .. KEYS[2] ..
    '; the record was not deleted')
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', KEYS[2], msg)
return 1

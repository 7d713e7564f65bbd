-- put: write that the leader of a term leads, unless a later term already does, and announce a new leader.
-- One round trip.
-- KEYS[1] the election's record, KEYS[2] the channel its changes are announced on.
-- ARGV[1] the term (an integer), ARGV[2] the leader's identity, ARGV[3] how long its lease has left, in ms (> 0).
-- Returns 1 when the record holds this term now, 0 when a later term holds it (this leader was superseded).
-- The record is "<term> <identity>" and expires with the lease: a leader that dies leaves no record behind it.
-- Whatever can be refused comes before the only write: a put that observers cannot be told of is refused with
-- NOPERM and writes nothing (Redis does not roll a script back).
local term = tonumber(ARGV[1])
-- GET raises WRONGTYPE for a key that is not a string, before anything is written.
local current = redis.call('GET', KEYS[1])
if current then
  local held = tonumber(string.match(current, '^%d+'))
  if held and held > term then
    return 0
  end
  if held == term then
    -- A refresh of the same term: observers learn nothing new, so nothing is announced.
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return 1
  end
end
local msg = 'elected ' .. ARGV[1] .. ' ' .. ARGV[3] .. ' ' .. ARGV[2]
-- redis.acl_check_cmd is Redis 7's; older servers and miniredis skip the check.
if redis.acl_check_cmd and not redis.acl_check_cmd('PUBLISH', KEYS[2], msg) then
  return redis.error_reply("NOPERM this user has no permissions to run the 'publish' command on " .. KEYS[2] ..
    '; the record was not written')
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'PX', ARGV[3])
redis.call('PUBLISH', KEYS[2], msg)
return 1

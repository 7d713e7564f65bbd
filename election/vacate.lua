-- vacate: delete the record of a term that ended, unless another term holds it, and announce the vacancy.
-- One round trip.
-- KEYS[1] the election's record, KEYS[2] the channel its changes are announced on. ARGV[1] the term.
-- Returns 1 when the record was deleted, 0 when it held another term (or nothing) and was left alone.
local current = redis.call('GET', KEYS[1])
if not current or tonumber(string.match(current, '^%d+')) ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', KEYS[2], 'vacated ' .. ARGV[1])
return 1

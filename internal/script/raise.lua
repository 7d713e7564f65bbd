-- raise: raise the fencing counter to at least a given fence. One round trip.
-- KEYS[1] fencing counter. ARGV[1] the fence (an integer), ARGV[2] ttl of the counter in ms.
-- Returns the counter after the call: at least ARGV[1].
-- read_counter (fence.lua) answers WRONGTYPE for a counter of another type or one that holds no integer; the SET
-- is the only write, so a refused one leaves nothing behind.
local counter, err = read_counter(KEYS[1])
if err then
  return err
end
local fence = tonumber(ARGV[1])
if counter and counter >= fence then
  return counter
end
-- Like the acquire script, the counter expires some time after its last raise: the clock term of the next fence
-- covers a counter that is gone (see fence.lua).
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return fence

-- Shared by the scripts that hand out fencing tokens; prepended to them when they are loaded.

-- next_fence advances the fencing counter in key and returns the new token, or nil and the error reply when the
-- counter cannot be incremented (another type, not an integer); the caller then undoes its writes.
--
-- Tokens never go backwards. A counter that does not exist (a new lock, a counter that expired, or one forgotten
-- by a server restarted without persistence) starts at the server's clock in microseconds, with a ttl of
-- ttl_ms set once; from then on each acquisition adds one. A counter grows by one per acquisition, far slower than
-- the clock's million per second, so when it starts over it starts above every token it handed out, as long as
-- the server's clock does not step back. One INCR is all the common case costs.
--
-- floor (a number, or nil for none) is a token the caller wants to be above: a counter that is not is set to
-- floor + 1 (the nodes of a quorum lock then agree on the token; see redlock).
local function next_fence(key, ttl_ms, floor)
  local fence = redis.pcall('INCR', key)
  if type(fence) == 'table' then
    return nil, fence
  end
  if fence == 1 then
    local t = redis.call('TIME')
    fence = tonumber(t[1]) * 1000000 + tonumber(t[2])
    redis.call('SET', key, string.format('%d', fence), 'PX', ttl_ms)
  end
  if floor and fence <= floor then
    fence = floor + 1
    redis.call('SET', key, string.format('%d', fence), 'PX', ttl_ms)
  end
  return fence
end

-- read_counter returns the fencing counter in key, 0 when there is none (or it is not a number). It raises
-- WRONGTYPE for a counter of another type before anything is written.
local function read_counter(key)
  return tonumber(redis.call('GET', key) or '0') or 0
end

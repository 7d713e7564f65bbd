-- Shared by the scripts that hand out fencing tokens; prepended to them when they are loaded.

-- read_counter returns the fencing counter in key (0 when absent or not a number: the clock term below still
-- keeps tokens increasing). Call it before any write: a counter of another type raises WRONGTYPE here, with
-- nothing changed yet.
local function read_counter(key)
  return tonumber(redis.call('GET', key) or '0') or 0
end

-- next_fence stores and returns the next fencing token after counter. It never goes backwards: it is at least
-- one more than the last one handed out, and at least the server's clock in microseconds, so a server restarted
-- without persistence (counter forgotten) still hands out larger tokens, as long as its clock did not step back.
-- The counter may therefore expire (ttl_ms).
local function next_fence(key, counter, ttl_ms)
  local t = redis.call('TIME')
  local fence = math.max(counter + 1, tonumber(t[1]) * 1000000 + tonumber(t[2]))
  redis.call('SET', key, string.format('%d', fence), 'PX', ttl_ms)
  return fence
end

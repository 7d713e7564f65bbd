-- Shared by the scripts that hand out fencing tokens; prepended to them (after guard.lua, where they have it) when
-- they are loaded.
--
-- The fence handed out is max(counter + 1, the server's clock in µs, floor + 1), and the counter is set to it.
--   * Consecutive holders on one server get increasing fences: the counter only grows.
--   * A counter that is missing (a new lock, one that expired, one forgotten by a restart without persistence) or
--     stale (a failover to a replica that had not received its last writes) hands out at least the new server's
--     clock, which is above every fence handed out before, because each of those was at most its server's clock
--     at the time. That holds as long as the clocks of a server and its replicas differ by less than the time from
--     the last acquisition on the old primary to the first on the new one (a failover takes seconds; NTP keeps
--     clocks within milliseconds), and a clock does not step back by more than that. A fence runs ahead of the
--     clock only through floor (a quorum lock's: the client's clock + 1 s) or by more acquisitions than
--     microseconds; that margin adds to the clock difference the failover must outlast.
-- Fences are microsecond-scale numbers, exact in Lua's doubles until the year 2255.

-- read_counter returns the fencing counter in key, nil when there is none; or nil and a WRONGTYPE error reply for
-- a counter of another type or one that holds no integer. It only reads.
local function read_counter(key)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' then
    return nil, v
  end
  if not v then
    return nil
  end
  local n = tonumber(v)
  if not n or n ~= math.floor(n) then
    return nil, redis.error_reply('WRONGTYPE the fencing counter ' .. key .. ' holds ' .. v .. ', not an integer')
  end
  return n
end

-- next_fence reads the counter in key and returns the next fence at time t (a TIME reply), above floor (a
-- number, or nil for none), with the SET that stores it, as a table of arguments. It only reads (GET, TIME by the
-- caller): the caller runs the SET with its other writes, after asking allow for it unless its first write is a
-- SET too. On an error it returns nil and the error reply. A new counter lives ttl_ms, and an existing one keeps
-- its ttl, as when it was advanced with INCR; a floor that lifts the counter sets ttl_ms again, as a raise does.
local function next_fence(key, t, ttl_ms, floor)
  local counter, err = read_counter(key)
  if err then
    return nil, err
  end
  local fence = math.max((counter or 0) + 1, tonumber(t[1]) * 1000000 + tonumber(t[2]))
  local lifted = floor and fence <= floor
  if lifted then
    fence = floor + 1
  end
  local v = string.format('%d', fence)
  if not counter or lifted then
    return fence, {'SET', key, v, 'PX', ttl_ms}
  end
  return fence, {'SET', key, v, 'KEEPTTL'}
end

-- Shared by the scripts that hand out fencing tokens; prepended to them (after guard.lua, where they have it) when
-- they are loaded.
--
-- Every fence is max(counter + 1, the server's clock in µs, floor + 1), where the counter is the lock's fencing
-- counter ({name}:fence) and floor a quorum lock's (the client's clock + 1 s).
--   * The counter remembers the last fence: a release sets it to the holder's fence (release.lua), and a quorum
--     lock sets it to the fence it hands out (so that its nodes agree). So the holders of a lock get strictly
--     increasing fences, also when the clock has not moved on between them (a hand-over inside a release, a server
--     whose clock is coarse, or stands still in a test).
--   * The counter lives 2 × ttl after its last write, no longer: a program that locks millions of short-lived names
--     leaves nothing behind for them once that has passed. A holder that did not release (it crashed, its lease
--     ran out) writes no counter, but its key lived its ttl: the clock has moved on by that much since its fence.
--   * A counter that is missing (expired, forgotten by a restart without persistence) or stale (a failover to a
--     replica that had not received the last writes) hands out at least the new server's clock, which is above
--     every fence handed out before, since each of those was at most its server's clock at the time (or ran ahead
--     of it by a floor, or by a few acquisitions within the same µs). That holds as long as the clocks of a server
--     and its replicas differ by less than the time from the last acquisition on the old primary to the first on
--     the new one (a failover takes seconds; NTP keeps clocks within milliseconds), and a clock does not step back
--     by more than that: the clock Redis's own key expiry runs on. A quorum lock's fence also relies on its
--     clients' clocks being within 2 × ttl of each other, the life of a counter.
-- Fences are microsecond-scale numbers, exact in Lua's doubles until the year 2255.

-- clock_fence returns the fence at time t (a TIME reply): the time in µs, or floor + 1 when that is larger (floor
-- a number, or nil for none).
local function clock_fence(t, floor)
  local fence = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if floor and fence <= floor then
    return floor + 1
  end
  return fence
end

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

-- next_fence reads the counter in key and returns the next fence at time t, above floor (a number, or nil for
-- none): max(counter + 1, clock_fence(t, floor)), with the SET that stores it and restarts its ttl (ttl_ms), as a
-- table of arguments, for a caller that stores it. It only reads (GET, TIME by the caller): the caller runs the SET with its other writes,
-- after asking allow for it unless its first write is a SET too. On an error it returns nil and the error reply.
local function next_fence(key, t, ttl_ms, floor)
  local counter, err = read_counter(key)
  if err then
    return nil, err
  end
  local fence = math.max((counter or 0) + 1, clock_fence(t, floor))
  return fence, {'SET', key, string.format('%d', fence), 'PX', ttl_ms}
end

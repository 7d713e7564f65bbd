-- Shared by the semaphore scripts; prepended to them (after guard.lua and fence.lua) when they are loaded.
--
-- Keys of one semaphore, all in its cluster slot: KEYS[1] holders (sorted set: member = permit value, score =
-- expiry in ms of the server's clock), KEYS[2] reservations (sorted set: member = process id, score = end of its
-- claim window), KEYS[3] queue of waiting processes (sorted set, scored by arrival in µs), KEYS[4] fencing counter,
-- KEYS[5] the semaphore's channel.
--
-- Messages. "" on the semaphore's channel (every subscriber hears it) says a place is free for anyone who tries.
-- Each waiting process also has a channel of its own, <prefix><id>:released, for what concerns only it:
--   "r <ms>"                 a place is reserved for you for ms: claim it;
--   "s <wait> [<id> <ms>]…"  you are first in line, and this is what you need to know to wait: ms until enough
--                            permits expire to make room (-1: reservations alone fill it), and the places reserved
--                            for other processes with the ms left of their windows (if one is not claimed in
--                            time, try: its process may be dead);
--   "c <id> <ms>"            (to the first in line) the place reserved for process id is claimed: no longer watch
--                            it; the permit it became expires in ms.
-- Only the first in line watches reservations, so a claim costs one message, not one per waiting process.

local function server_time()
  local t = redis.call('TIME')
  return t, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- wait_ms: how long until enough holders expire for `occupied` places to drop below limit, counting reservations
-- as places that will be claimed; -2 when there is room now, -1 when reservations alone fill the semaphore.
local function wait_ms(now, limit, holding, occupied)
  if occupied < limit then
    return -2
  end
  local k = occupied - limit
  if k >= holding then
    return -1
  end
  local e = redis.call('ZRANGE', KEYS[1], k, k, 'WITHSCORES')
  return tonumber(e[2]) - now
end

-- state returns {wait, id1, ms1, ...}: what the first in line needs to know to wait (see "s" above), given the
-- numbers of holders and reservations.
local function state(now, limit, holding, reserving)
  local res = {wait_ms(now, limit, holding, holding + reserving)}
  if reserving > 0 then
    local r = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
    for i = 1, #r, 2 do
      res[#res + 1] = r[i]
      res[#res + 1] = tonumber(r[i + 1]) - now
    end
  end
  return res
end

-- first_in_line returns the first process in line, or nil. The queue is usually empty, and ZCARD costs a script a
-- third of what ZRANGE does.
local function first_in_line()
  if redis.call('ZCARD', KEYS[3]) == 0 then
    return nil
  end
  return redis.call('ZRANGE', KEYS[3], 0, 0)[1]
end

-- tell publishes msg on the channel of process id. A user that may not publish there is refused, which changes
-- nothing: the process learns what changed when its timer fires (see guard.lua's announce).
-- It reports whether msg was published.
local function tell(prefix, publish, id, msg)
  return announce(publish, prefix .. id .. ':released', msg)
end

local function tell_state(prefix, publish, id, st)
  tell(prefix, publish, id, 's ' .. table.concat(st, ' '))
end

-- tell_first tells the first in line, if any, what it needs to know to wait.
local function tell_first(prefix, publish, now, limit)
  local h = first_in_line()
  if h then
    tell_state(prefix, publish, h, state(now, limit, redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2])))
  end
end

-- queue_at_back puts the process id in line, keeping an earlier place unless moved is true. The queue lives a
-- while after its last join; a shorter-lived waiter does not cut a longer one's time short.
local function queue_at_back(t, id, moved, ttl_ms)
  local arrival = t[1] .. string.format('%06d', tonumber(t[2]))
  if moved then
    redis.call('ZADD', KEYS[3], arrival, id)
  else
    redis.call('ZADD', KEYS[3], 'NX', arrival, id)
  end
  if redis.call('PTTL', KEYS[3]) < tonumber(ttl_ms) then
    redis.call('PEXPIRE', KEYS[3], ttl_ms)
  end
end

-- keep_until makes key live at least until the server time expiry (ms), so that an abandoned semaphore leaves
-- nothing behind.
local function keep_until(key, expiry, ms)
  if redis.call('PTTL', key) < ms then
    redis.call('PEXPIREAT', key, string.format('%d', expiry))
  end
end

-- semaphore release: give a permit back only while it is still held by this value, and pass its place on. One
-- round trip. With an empty value the caller's process leaves the line instead (it stopped waiting), and a place
-- reserved for it is passed on the same way. Keys and messages: see semaphore_lib.lua.
-- ARGV[1] the permit's value ('' to leave), ARGV[2] PUBLISH or SPUBLISH, ARGV[3] the caller's limit, ARGV[4] claim
-- window in ms, ARGV[5] the value of a successor in the caller's own process ('' for none), ARGV[6] its ttl in ms,
-- ARGV[7] ttl of the fencing counter in ms ('0': no fencing token), ARGV[8] '1' when the successor may take the
-- place even though other processes wait, ARGV[9] the caller's process id ('' for none), ARGV[10] '1' when the
-- process has waiters besides the successor, ARGV[11] the prefix of the processes' channels.
-- A release changes the caller's place in line only where no acquire of the same process can be on its way
-- (those keep the line themselves): a process whose last waiter takes the permit over leaves it, and a process
-- that yields its turn goes to its back if it was in it.
-- Returns {outcome, fence, first}: outcome 0 when the permit was not held by this value (expired, released, or never
-- taken; or nothing was reserved for a process that leaves); 1 when its place was passed on: reserved for the first
-- waiting process for the claim window ("r" on its channel), or announced free ("" on the semaphore's channel) when
-- no process waits or the caller's limit is below the count; 2 when the successor now holds it (fence 0 without
-- fencing). first is 1 when the caller's process is first in line after the call.
-- Reads and checks come before the first write (see guard.lua): a refused or failed call leaves nothing behind. A
-- message that the user may not publish is not sent, and the release happens all the same; a place is reserved
-- only for a process that could be told.
redis.replicate_commands()

local t, now = server_time()
local value, publish, limit, successor = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[5]
local waiter, prefix, window = ARGV[9], ARGV[11], tonumber(ARGV[4])

-- The first read of each key raises WRONGTYPE for a key of another type before anything is written.
local first = first_in_line()
local score = value ~= '' and redis.call('ZSCORE', KEYS[1], value)
local holding, reserving = redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2])
local queued = waiter ~= '' and redis.call('ZSCORE', KEYS[3], waiter)
local others = 0 -- processes in line other than the caller's
if successor ~= '' then
  others = redis.call('ZCARD', KEYS[3])
  if queued then
    others = others - 1
  end
end
local fence, set_fence = 0, nil
if successor ~= '' and ARGV[7] ~= '0' then
  fence, set_fence = next_fence(KEYS[4], t, ARGV[7])
  if not fence then
    return set_fence
  end
  allow(unpack(set_fence))
end
-- The commands that may follow the first write, other than the reads above (ZSCORE, ZCARD) and
-- ZREMRANGEBYSCORE, which is the first; ZRANGE reads the state told to the first in line after the writes.
allow('ZRANGE', KEYS[1], 0, 0)
allow('ZREM', KEYS[1], 'x')
allow('ZADD', KEYS[2], now, 'x')
allow('PTTL', KEYS[2])
allow('PEXPIREAT', KEYS[2], now)

-- Expired permits and reservations are reclaimed; the counts follow without being read again.
reserving = reserving - redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
holding = holding - redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)

-- done tells the first in line what changed for it (changed: reservations, or a permit that expires sooner), and
-- answers.
local function done(outcome, changed)
  local now_first = first_in_line()
  if now_first and (changed or now_first ~= first) then
    tell_state(prefix, publish, now_first, state(now, limit, holding, reserving))
  end
  local res = {outcome, fence, 0}
  if waiter ~= '' and now_first == waiter then
    res[3] = 1
  end
  return res
end

local held = false
if value == '' then
  if waiter ~= '' then
    redis.call('ZREM', KEYS[3], waiter)
    held = redis.call('ZREM', KEYS[2], waiter) == 1
    if held then
      reserving = reserving - 1
    end
  end
elseif score and tonumber(score) > now then
  held = redis.call('ZREM', KEYS[1], value) == 1
  if held then
    holding = holding - 1
  end
end
if not held then
  fence = 0
  return done(0, false)
end

if holding + reserving >= limit then
  -- The caller's limit was lowered below the count: its place goes to nobody of this process, but a process with
  -- a higher limit may still take it.
  announce(publish, KEYS[5], '')
  fence = 0
  return done(1, false)
end

-- pass_on reserves a place for the first process in line for a short claim window, and wakes only it; one that
-- died costs no more than the window, since it leaves the queue now and the next in line watches the window. With
-- nobody in line, or a first in line that the user may not tell, the place is announced free to everyone. It
-- returns whether a place was reserved.
local function pass_on()
  local head = first_in_line()
  if not head or not tell(prefix, publish, head, 'r ' .. window) then
    announce(publish, KEYS[5], '')
    return false
  end
  redis.call('ZREM', KEYS[3], head)
  redis.call('ZADD', KEYS[2], now + window, head)
  reserving = reserving + 1
  keep_until(KEYS[2], now + window, window)
  return true
end

if successor ~= '' and (ARGV[8] == '1' or others == 0) then
  if set_fence then
    redis.call(unpack(set_fence))
  end
  local ttl = tonumber(ARGV[6])
  redis.call('ZADD', KEYS[1], now + ttl, successor)
  holding = holding + 1
  keep_until(KEYS[1], now + ttl, ttl)
  -- The first in line waits for the released permit's expiry at the latest; the successor's may come earlier.
  local changed = value ~= '' and now + ttl < tonumber(score)
  if waiter ~= '' and ARGV[10] ~= '1' then
    -- Its last waiter is served: the process leaves the line, and a place reserved for it meanwhile (its message
    -- not read yet) goes on to the next process.
    redis.call('ZREM', KEYS[3], waiter)
    if redis.call('ZREM', KEYS[2], waiter) == 1 then
      reserving = reserving - 1
      changed = pass_on() or changed
    end
  end
  return done(2, changed)
end

-- The first process in line (not the caller's: it yields its turn, and goes to the back) gets the place.
fence = 0
if queued then
  redis.call('ZREM', KEYS[3], waiter)
end
local reserved = pass_on()
if queued then
  redis.call('ZADD', KEYS[3], t[1] .. string.format('%06d', tonumber(t[2])), waiter)
end
return done(1, reserved)

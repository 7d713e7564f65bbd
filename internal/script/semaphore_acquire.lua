-- semaphore acquire: take a permit if the semaphore has room (or a place is reserved for this process), and tell a
-- caller that has to wait how long it may have to. One round trip. Keys and messages: see semaphore_lib.lua.
-- ARGV[1] the permit's value (token and metadata), ARGV[2] ttl in ms, ARGV[3] the caller's limit, ARGV[4] the
-- waiting process's id ('' for a plain try: no queue, no claim), ARGV[5] ttl of the queue in ms, ARGV[6] ttl of the
-- fencing counter in ms ('0': no fencing token), ARGV[7] '1' when the process has more waiters after this one
-- (it stays in line, at the back), ARGV[8] PUBLISH or SPUBLISH, ARGV[9] the prefix of the processes' channels.
-- Returns {ok, fence, first, wait, id1, ms1, ...}: ok 1 with the permit taken (fence 0 without fencing), ok 0
-- without; first 1 when the caller's process is first in line after the call; then the state of semaphore_lib.lua,
-- with wait -2 when there is room left after this acquire, or only wait -3 when the permit was taken and the
-- process has no other waiter (nobody needs the state).
-- Time is the server's (TIME), so the clocks of clients cannot make it admit more than the limit.
-- Reads and checks come before the first write (see guard.lua): a refused or failed call leaves nothing behind.
redis.replicate_commands()

local t, now = server_time()
local value, ttl, limit, waiter = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local publish, prefix = ARGV[8], ARGV[9]
local requeue = waiter ~= '' and ARGV[7] == '1'

-- The first read of each key raises WRONGTYPE for a key of another type before anything is written: the queue's
-- here, the holders' just below, the fencing counter's in next_fence, the reservations' at the latest by ZCARD.
local first = first_in_line()
-- The permit may be the caller's already: a hand-over to this value whose answer was lost, or this very acquire,
-- resent by the client after the connection dropped. It is renewed, not refused, whatever the count: refusing
-- would leave it held until its ttl by a caller told it has none.
local mine = redis.call('ZSCORE', KEYS[1], value)
if mine and tonumber(mine) <= now then
  mine = false
end
-- Otherwise a place reserved for the caller's process, still in its window, is claimed.
local claimed = not mine and waiter ~= '' and redis.call('ZSCORE', KEYS[2], waiter)
if claimed and tonumber(claimed) <= now then
  claimed = false
end
local fence, set_fence = 0, nil
if ARGV[6] ~= '0' then
  fence, set_fence = next_fence(KEYS[4], t, ARGV[6])
  if not fence then
    return set_fence
  end
  allow(unpack(set_fence))
end
-- The commands that may follow the first write, other than the reads above (ZSCORE, ZCARD). ZRANGE, which reads
-- the state told to a waiter after the writes, is asked for too: refused after them, it left a waiter in line
-- with an error. Reclaiming (ZREMRANGEBYSCORE) is always the first write when it happens.
allow('ZRANGE', KEYS[1], 0, 0)
allow('ZADD', KEYS[1], now, value)
allow('PTTL', KEYS[1])
allow('PEXPIREAT', KEYS[1], now)
if waiter ~= '' then
  allow('ZREM', KEYS[3], waiter)
  allow('PEXPIRE', KEYS[3], ARGV[5])
end

-- Permits past their expiry, and places reserved for a process that did not claim them in its window, are
-- reclaimed by whoever comes next: a crashed holder costs its ttl, a dead process first in line its window. A
-- claim skips that (the hand-off across processes is the path that must be fast): entries that expired but are
-- still counted can only make it refuse, and then it reclaims and counts again. The counts are read before the
-- reclaim, which is the first write.
local holding, reserving = redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2])
local function count()
  reserving = reserving - redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  holding = holding - redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
end
if not claimed or holding + reserving - 1 >= limit then
  count()
end
-- The caller's own permit or reservation is not a place taken from it.
if mine then
  holding = holding - 1
elseif claimed then
  reserving = reserving - 1
end

if mine or holding + reserving < limit then
  if set_fence then
    redis.call(unpack(set_fence))
  end
  if claimed then
    redis.call('ZREM', KEYS[2], waiter)
  end
  redis.call('ZADD', KEYS[1], now + ttl, value)
  holding = holding + 1
  keep_until(KEYS[1], now + ttl, ttl)
  local now_first = first
  if waiter ~= '' then
    if not claimed then
      redis.call('ZREM', KEYS[3], waiter) -- a claimant left the line when the place was reserved for it
    end
    if requeue then
      queue_at_back(t, waiter, false, ARGV[5])
    end
    if first == waiter or requeue then
      now_first = first_in_line()
    end
  end
  if now_first and now_first ~= waiter then
    if now_first ~= first then
      tell_state(prefix, publish, now_first, state(now, limit, holding, reserving))
    elseif claimed then
      -- The first in line watched the reservation; now it is a permit that expires in ttl.
      tell(prefix, publish, now_first, 'c ' .. waiter .. ' ' .. ARGV[2])
    end
  end
  local res = {1, fence, 0}
  if waiter ~= '' and now_first == waiter then
    res[3] = 1
  end
  if not requeue then
    res[4] = -3 -- no other waiter of the caller's process needs to know more
    return res
  end
  for _, v in ipairs(state(now, limit, holding, reserving)) do
    res[#res + 1] = v
  end
  return res
end

if claimed then
  -- The caller's limit is lower than the releaser's: the reserved place cannot be used here; it is free for a
  -- process with a higher limit.
  redis.call('ZREM', KEYS[2], waiter)
  announce(publish, KEYS[5], '')
end
local res = {0, 0, 0}
if waiter ~= '' then
  queue_at_back(t, waiter, false, ARGV[5])
  if first == nil or first == waiter then
    res[3] = 1
  end
end
for _, v in ipairs(state(now, limit, holding, reserving)) do
  res[#res + 1] = v
end
return res

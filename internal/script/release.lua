-- release: give the lock up only while it still holds this holder's value, and pass it on. One round trip.
-- KEYS[1] lock key, KEYS[2] release channel, KEYS[3] queue of waiting processes, KEYS[4] fencing counter.
-- ARGV[1] the holder's value, ARGV[2] PUBLISH or SPUBLISH, ARGV[3] claim window in ms,
-- ARGV[4] the value of a successor in the holder's own process ('' for none), ARGV[5] its ttl in ms,
-- ARGV[6] the holder's fence, which the counter is set to (unless it is above), for ARGV[11] ms (see fence.lua),
-- ARGV[7] '1' when the successor may take the lock even though other
-- processes wait (the holder's process has not used up its turn), ARGV[8] the holder's process id in the queue
-- ('' for none): it leaves the queue, since it either keeps the lock (successor) or yields its turn.
-- ARGV[9] ttl of the queue in ms, for a holder's process that yields its turn while it has a successor.
-- ARGV[11] ttl of the fencing counter in ms.
-- ARGV[10] the holder's process id when it has waiters of its own but no successor value ('' for none): while
-- it has not used up its turn (ARGV[7]) and other processes wait, the lock is reserved for it, as for the first
-- process in line (redlock, whose successors claim the lock on every node with a try of their own).
-- Returns {0, 0} when the lock was not held by this value (expired, or taken by another); {1, 0} when it was
-- released: reserved for the first waiting process, which is told on the channel ("r <id> <window>"), or freed
-- ("" on the channel) when no process waits; {2, fence} when it was handed to the successor; {3, 0} when it was
-- reserved for the first waiting process and the holder's process, which has a successor, joined the end of the
-- queue; {4, 0} when it was reserved for the holder's own process (ARGV[10]), which was told; {5, 0} when it was
-- freed but nobody could be told: the user may not publish on the channel (the queue keeps its order).
-- Reads and checks come before the first write (see guard.lua): a refused or failed call leaves nothing behind,
-- and a release that happened is reported as one.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {0, 0}
end
-- The counter remembers the holder's fence, so that the next holder's is above it (no fence: '0', nothing to
-- remember). read_counter (fence.lua) raises WRONGTYPE for a counter of another type or one that holds no integer.
local held = tonumber(ARGV[6])
local counter, err = read_counter(KEYS[4])
if err then
  return err
end
local remember = held > 0 and (not counter or counter < held)
local publish, window, successor, own = ARGV[2], ARGV[3], ARGV[4], ARGV[8]
local cohort = ARGV[7] == '1'

-- ZCARD raises WRONGTYPE for a queue of another type.
local waiting = redis.call('ZCARD', KEYS[3])
if waiting == 0 and successor == '' then
  -- The common case, first: nobody waits, nobody takes over. The lock is freed, announced if it may be, and its
  -- fence remembered (the last write of every way: see note).
  redis.call('DEL', KEYS[1])
  local told = type(redis.pcall(publish, KEYS[2], '')) ~= 'table'
  if remember then
    redis.pcall('SET', KEYS[4], ARGV[6], 'PX', ARGV[11])
  end
  if not told then
    return {5, 0}
  end
  return {1, 0}
end

-- Where the holder's process stands in line, and how many other processes wait.
local queued = waiting > 0 and own ~= '' and redis.call('ZSCORE', KEYS[3], own)
local others = waiting
if queued then
  others = others - 1
  allow('ZREM', KEYS[3], own)
end

-- note sets the counter to the holder's fence, unless it is above: the last write of every way the release goes,
-- so that nothing is written when a call before it is refused. It runs with pcall: a server out of memory refuses
-- a SET (not the DEL), a user may lack SET, and the release happened all the same; the next fence is then the
-- clock's, as when the counter expired.
local function note()
  if remember then
    redis.pcall('SET', KEYS[4], ARGV[6], 'PX', ARGV[11])
  end
end

-- leave takes the holder's process out of the queue: it either keeps the lock (successor) or yields its turn.
local function leave()
  if queued then
    redis.call('ZREM', KEYS[3], own)
  end
end

if successor ~= '' and (cohort or others == 0) then
  -- The fence is the clock's (fence.lua), and above the holder's: the successor takes over within this call, with
  -- no round trip in between, and the clock may not have moved on.
  local t = redis.call('TIME')
  local fence = math.max(tonumber(t[1]) * 1000000 + tonumber(t[2]), math.max(held, counter or 0) + 1)
  redis.call('SET', KEYS[1], successor, 'PX', ARGV[5])
  leave()
  note()
  return {2, fence}
end

-- tell announces that the lock is reserved for the waiting process id. When the user may not publish, the lock is
-- freed instead (a reservation nobody hears of would hold it for a claim window), and the holder's process leaves
-- the line. It reports whether it told.
local function tell(id)
  if announce(publish, KEYS[2], 'r ' .. id .. ' ' .. window) then
    return true
  end
  redis.call('DEL', KEYS[1])
  leave()
  note()
  return false
end
allow('DEL', KEYS[1])

if ARGV[10] ~= '' and cohort and others > 0 then
  redis.call('SET', KEYS[1], 'reserved:' .. ARGV[10], 'PX', window)
  if not tell(ARGV[10]) then
    return {5, 0}
  end
  leave()
  note()
  return {4, 0}
end

if others > 0 then
  -- The next process in line gets the lock reserved for a short claim window and is the only one woken to take
  -- it; one that died costs no more than the window, since it leaves the queue now. ZPOPMIN, the first write, is
  -- how it is read: ZRANGE costs a script three times as much.
  local requeue = successor ~= '' and own ~= ''
  local t
  if requeue then
    t = redis.call('TIME')
    allow('PEXPIRE', KEYS[3], ARGV[9])
  end
  allow('SET', KEYS[1], 'reserved:', 'PX', window)
  allow('ZADD', KEYS[3], 0, own)
  local head = redis.call('ZPOPMIN', KEYS[3])
  if head[1] == own then
    queued = false -- it has left the line already
    head = redis.call('ZPOPMIN', KEYS[3])
  end
  redis.call('SET', KEYS[1], 'reserved:' .. head[1], 'PX', window)
  if not tell(head[1]) then
    redis.call('ZADD', KEYS[3], head[2], head[1]) -- back in its place
    return {5, 0}
  end
  if requeue then
    -- The holder's process yields its turn with a waiter of its own: it takes its place at the end of the line
    -- here, which spares that waiter a try that could only fail.
    redis.call('ZADD', KEYS[3], t[1] .. string.format('%06d', tonumber(t[2])), own)
    redis.call('PEXPIRE', KEYS[3], ARGV[9])
    note()
    return {3, 0}
  end
  leave()
  note()
  return {1, 0}
end

redis.call('DEL', KEYS[1])
leave()
note()
if not announce(publish, KEYS[2], '') then
  return {5, 0}
end
return {1, 0}

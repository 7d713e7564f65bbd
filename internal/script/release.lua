-- release: give the lock up only while it still holds this holder's value, and pass it on. One round trip.
-- KEYS[1] lock key, KEYS[2] release channel, KEYS[3] queue of waiting processes, KEYS[4] fencing counter.
-- ARGV[1] the holder's value, ARGV[2] PUBLISH or SPUBLISH, ARGV[3] claim window in ms,
-- ARGV[4] the value of a successor in the holder's own process ('' for none), ARGV[5] its ttl in ms,
-- ARGV[6] ttl of a new fencing counter in ms, ARGV[7] '1' when the successor may take the lock even though other
-- processes wait (the holder's process has not used up its turn), ARGV[8] the holder's process id in the queue
-- ('' for none): it leaves the queue, since it either keeps the lock (successor) or yields its turn.
-- ARGV[9] ttl of the queue in ms, for a holder's process that yields its turn while it has a successor.
-- ARGV[10] the holder's process id when it has waiters of its own but no successor value ('' for none): while
-- it has not used up its turn (ARGV[7]) and other processes wait, the lock is reserved for it, as for the first
-- process in line (redlock, whose successors claim the lock on every node with a try of their own).
-- Returns {0, 0} when the lock was not held by this value (expired, or taken by another); {1, 0} when it was
-- released: reserved for the first waiting process, which is told on the channel ("r <id> <window>"), or freed
-- ("" on the channel) when no process waits; {2, fence} when it was handed to the successor; {3, 0} when it was
-- reserved for the first waiting process and the holder's process, which has a successor, joined the end of the
-- queue; {4, 0} when it was reserved for the holder's own process (ARGV[10]), which was told.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {0, 0}
end

if ARGV[8] ~= '' then
  redis.call('ZREM', KEYS[3], ARGV[8])
end
if ARGV[4] ~= '' and (ARGV[7] == '1' or redis.call('ZCARD', KEYS[3]) == 0) then
  local fence, set_fence = next_fence(KEYS[4], redis.call('TIME'), ARGV[6])
  if not fence then
    return set_fence
  end
  redis.call(unpack(set_fence))
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])
  return {2, fence}
end

if ARGV[10] ~= '' and ARGV[7] == '1' and redis.call('ZCARD', KEYS[3]) > 0 then
  redis.call('SET', KEYS[1], 'reserved:' .. ARGV[10], 'PX', ARGV[3])
  redis.call(ARGV[2], KEYS[2], 'r ' .. ARGV[10] .. ' ' .. ARGV[3])
  return {4, 0}
end

-- The next process in line gets the lock reserved for a short claim window and is the only one woken to take
-- it; one that died costs no more than the window, since it leaves the queue now.
local head = redis.call('ZPOPMIN', KEYS[3])
if head[1] then
  redis.call('SET', KEYS[1], 'reserved:' .. head[1], 'PX', ARGV[3])
  redis.call(ARGV[2], KEYS[2], 'r ' .. head[1] .. ' ' .. ARGV[3])
  if ARGV[4] ~= '' and ARGV[8] ~= '' then
    -- The holder's process yields its turn with a waiter of its own: it takes its place at the end of the line
    -- here, which spares that waiter a try that could only fail.
    local t = redis.call('TIME')
    redis.call('ZADD', KEYS[3], 'NX', t[1] .. string.format('%06d', tonumber(t[2])), ARGV[8])
    redis.call('PEXPIRE', KEYS[3], ARGV[9])
    return {3, 0}
  end
else
  redis.call('DEL', KEYS[1])
  redis.call(ARGV[2], KEYS[2], '')
end
return {1, 0}

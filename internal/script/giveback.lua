-- giveback: a waiting process that gives up leaves the queue of waiting processes and, when a release reserved
-- the lock for it, passes the reservation on as a release would: reserved for the next process in line (which is
-- told), or freed (announced to everyone). Without it, the others would wait for the claim window to run out.
-- One round trip.
-- KEYS[1] lock key, KEYS[2] release channel, KEYS[3] queue of waiting processes.
-- ARGV[1] the process id, ARGV[2] PUBLISH or SPUBLISH, ARGV[3] claim window in ms.
-- Returns 1 when a reservation for the process was passed on, else 0.

-- GET and ZREM raise WRONGTYPE for keys of another type before anything is written.
local reserved = redis.call('GET', KEYS[1]) == 'reserved:' .. ARGV[1]
redis.call('ZREM', KEYS[3], ARGV[1])
if not reserved then
  return 0
end
local head = redis.call('ZPOPMIN', KEYS[3])
if head[1] then
  redis.call('SET', KEYS[1], 'reserved:' .. head[1], 'PX', ARGV[3])
  redis.call(ARGV[2], KEYS[2], 'r ' .. head[1] .. ' ' .. ARGV[3])
else
  redis.call('DEL', KEYS[1])
  redis.call(ARGV[2], KEYS[2], '')
end
return 1

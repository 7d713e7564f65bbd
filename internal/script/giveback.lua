-- giveback: a waiting process that gives up leaves the queue of waiting processes and, when a release reserved
-- the lock for it, passes the reservation on as a release would: reserved for the next process in line (which is
-- told), or freed (announced to everyone). Without it, the others would wait for the claim window to run out.
-- One round trip.
-- KEYS[1] lock key, KEYS[2] release channel, KEYS[3] queue of waiting processes.
-- ARGV[1] the process id, ARGV[2] PUBLISH or SPUBLISH, ARGV[3] claim window in ms.
-- Returns 1 when a reservation for the process was passed on, else 0.

-- GET and ZREM raise WRONGTYPE for keys of another type before anything is written, and the commands that may
-- follow the first write are asked for before it (see guard.lua): a user refused one of them leaves the queue and
-- the reservation as they were, instead of leaving the queue with the reservation stranded.
local reserved = redis.call('GET', KEYS[1]) == 'reserved:' .. ARGV[1]
if reserved then
  allow('ZPOPMIN', KEYS[3])
  allow('SET', KEYS[1], 'x', 'PX', ARGV[3])
  allow('DEL', KEYS[1])
end
redis.call('ZREM', KEYS[3], ARGV[1])
if not reserved then
  return 0
end
local head = redis.call('ZPOPMIN', KEYS[3])
if head[1] then
  redis.call('SET', KEYS[1], 'reserved:' .. head[1], 'PX', ARGV[3])
  announce(ARGV[2], KEYS[2], 'r ' .. head[1] .. ' ' .. ARGV[3])
else
  redis.call('DEL', KEYS[1])
  announce(ARGV[2], KEYS[2], '')
end
return 1

-- The rate limiter's one decision (GCRA, the generic cell rate algorithm): KEYS[1] holds the theoretical arrival
-- time (TAT), in µs of the server's clock, as an integer string; it expires when the TAT passes, so an idle limiter
-- leaves nothing behind.
--
-- ARGV: interval (µs per token), tolerance (µs: burst × interval), n (tokens), max wait (µs a reservation may
-- wait; 0: only take tokens available now; -1: any wait), hint (µs: the latest TAT the caller's process saw, a
-- floor for a TAT the server lost; 0: none).
--
-- The tokens take the virtual interval [base, base + n × interval), base = max(TAT, now, hint), and may be used
-- at max(now, base + n × interval − tolerance). When that is within max wait, the TAT moves to the interval's
-- end and the answer is {1, remaining, delay, reset after, base, end}; otherwise nothing is written and the answer
-- is {0, remaining, delay, reset after, 0, 0}. remaining is how many more tokens could be taken at once,
-- reset after how long until the whole burst is available again, all times in µs.
--
-- Reads (TIME, GET) come before the one write, which is the last call: a refusal (OOM, READONLY, an ACL without
-- SET) leaves the key as it was.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = now
local v = redis.call('GET', KEYS[1])
if v then
  local x = tonumber(v)
  if not x then
    return redis.error_reply('WRONGTYPE the rate limiter\'s key holds a value that is not a time')
  end
  if x > tat then
    tat = x
  end
end
local interval, tolerance, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local max_wait, hint = tonumber(ARGV[4]), tonumber(ARGV[5])
if hint > tat then
  tat = hint
end
local finish = tat + n * interval
local at = finish - tolerance
if at < now then
  at = now
end
local delay = at - now
if max_wait >= 0 and delay > max_wait then
  return {0, math.max(0, math.floor((now + tolerance - tat) / interval)), delay, tat - now, 0, 0}
end
redis.call('SET', KEYS[1], string.format('%.0f', finish), 'PX', math.ceil((finish - now) / 1000))
return {1, math.max(0, math.floor((now + tolerance - finish) / interval)), delay, finish - now, tat, finish}

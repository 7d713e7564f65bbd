-- Gives a reservation's tokens back when it is the latest one: KEYS[1] is the rate limiter's key, ARGV[1] and
-- ARGV[2] the start and end of the reservation's virtual interval (µs of the server's clock). Only while the TAT is
-- still the reservation's end (no reservation was made since, or every later one was given back) does the TAT go
-- back to its start: a later reservation's time was computed from this one's end and cannot move. Returns 1 when
-- the tokens were given back, 0 otherwise (nothing written).
local v = redis.call('GET', KEYS[1])
if not v then
  return 0
end
local x = tonumber(v)
if not x then
  return redis.error_reply('WRONGTYPE the rate limiter\'s key holds a value that is not a time')
end
if x ~= tonumber(ARGV[2]) then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
-- A start already past leaves a TAT in the past, as good as no key: it expires within a millisecond (SET, not DEL,
-- so that the limiter needs one write command).
local start = tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.0f', start), 'PX', math.max(1, math.ceil((start - now) / 1000)))
return 1

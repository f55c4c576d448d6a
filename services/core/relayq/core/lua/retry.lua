-- Moves a claimed job to the delayed set, to run again after a delay.
-- Input:  KEYS[1] stream, KEYS[2] delayed, KEYS[3] wake
--         ARGV[1] group, ARGV[2] entry id, ARGV[3] member "taskId|type",
--         ARGV[4] delay (ms)
-- Output: due time (ms, Redis clock)
local stream, delayed = KEYS[1], KEYS[2]
--!include now_ms
local now = now_ms()
local due = now + tonumber(ARGV[4])
redis.call('XACK', stream, ARGV[1], ARGV[2])
redis.call('XDEL', stream, ARGV[2])
redis.call('ZADD', delayed, due, ARGV[3])
local first = redis.call('ZRANGE', delayed, 0, 0)
if first[1] == ARGV[3] then
  redis.call('XADD', KEYS[3], 'MAXLEN', 1, '*', 'due', due)
end
return due

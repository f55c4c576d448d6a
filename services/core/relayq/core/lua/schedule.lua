-- Adds jobs to the delayed set, each due after its own delay.
-- Input:  KEYS[1] delayed, KEYS[2] wake
--         ARGV[1..] pairs: member "taskId|type", delay (ms)
-- Output: number of members added or moved
local delayed = KEYS[1]
local before = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
--!include now_ms
local now = now_ms()
local n = 0
for i = 1, #ARGV, 2 do
  redis.call('ZADD', delayed, now + tonumber(ARGV[i + 1]), ARGV[i])
  n = n + 1
end
local after = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
if before[2] ~= after[2] then
  redis.call('XADD', KEYS[2], 'MAXLEN', 1, '*', 'due', after[2])
end
return n

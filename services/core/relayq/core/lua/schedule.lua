-- Adds jobs to the delayed set, each due after its own delay.
-- Input:  KEYS[1] delayed
--         ARGV[1..] pairs: member "taskId|type", delay (ms)
-- Output: number of members added or moved
local delayed = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = 0
for i = 1, #ARGV, 2 do
  redis.call('ZADD', delayed, now + tonumber(ARGV[i + 1]), ARGV[i])
  n = n + 1
end
return n

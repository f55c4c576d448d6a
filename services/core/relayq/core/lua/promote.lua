-- Runs one delayed job now: moves it from the delayed set to the stream.
-- Input:  KEYS[1] stream, KEYS[2] delayed
--         ARGV[1] member "taskId|type"
-- Output: the new entry id, or false when the member was not delayed (already
--         due and in the stream, running, or not held by Redis at all)
local stream, delayed, member = KEYS[1], KEYS[2], ARGV[1]
if redis.call('ZREM', delayed, member) == 0 then
  return false
end
local sep = string.find(member, '|', 1, true)
return redis.call('XADD', stream, '*', 't', string.sub(member, 1, sep - 1),
  'y', string.sub(member, sep + 1))

-- Puts back jobs the caller found missing from Redis, each only if it is still
-- absent: not in the delayed set and not added to the stream since the
-- caller's scan began (every later XADD gets an id at or after ARGV[1]).
-- Input:  KEYS[1] stream, KEYS[2] delayed, KEYS[3] wake
--         ARGV[1] first stream id the caller's scan may have missed
--         ARGV[2..] triples: task id, type, delay (ms; negative: ready now)
-- Output: task ids added, in argument order
local stream, delayed, wake = KEYS[1], KEYS[2], KEYS[3]

local present = {}
for _, entry in ipairs(redis.call('XRANGE', stream, ARGV[1], '+')) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 't' then present[fields[i + 1]] = true end
  end
end

--!include now_ms
local now = now_ms()
local before = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
local added = {}
for i = 2, #ARGV, 3 do
  local id, kind, delay = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local member = id .. '|' .. kind
  if not present[id] and not redis.call('ZSCORE', delayed, member) then
    if delay < 0 then
      redis.call('XADD', stream, '*', 't', id, 'y', kind)
    else
      redis.call('ZADD', delayed, now + delay, member)
    end
    present[id] = true
    added[#added + 1] = id
  end
end
local after = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
if before[2] ~= after[2] then
  redis.call('XADD', wake, 'MAXLEN', 1, '*', 'due', after[2])
end
return added

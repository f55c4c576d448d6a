-- Claims up to ARGV[3] jobs for one consumer, after promoting due delayed jobs.
-- Input:  KEYS[1] stream, KEYS[2] delayed (zset: "taskId|type" scored by due ms),
--         KEYS[3] paused flag, KEYS[4] wake stream
--         ARGV[1] group, ARGV[2] consumer, ARGV[3] max jobs to claim,
--         ARGV[4] max delayed jobs to promote
-- Output: {paused (0|1), entries, last stream id or "0-0", next due ms or -1,
--          last wake id or "0-0"}
--         entries as XREADGROUP returns them: {{id, {field, value, ...}}, ...}
local stream, delayed, paused = KEYS[1], KEYS[2], KEYS[3]
local group, consumer = ARGV[1], ARGV[2]
local count, promote_limit = tonumber(ARGV[3]), tonumber(ARGV[4])

--!include now_ms
local now = now_ms()

local function last_id(key)
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if #last > 0 then return last[1][1] end
  return '0-0'
end

local function next_due()
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if #first == 0 then return -1 end
  return tonumber(first[2])
end

if redis.call('EXISTS', paused) == 1 then
  return {1, {}, '0-0', next_due(), last_id(KEYS[4])}
end

local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, promote_limit)
for _, member in ipairs(due) do
  local sep = string.find(member, '|', 1, true)
  redis.call('XADD', stream, '*', 't', string.sub(member, 1, sep - 1), 'y', string.sub(member, sep + 1))
  redis.call('ZREM', delayed, member)
end

local function read()
  return redis.pcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', stream, '>')
end
local res = read()
if type(res) == 'table' and res.err then
  -- The group (or the whole stream) is gone, e.g. lost in a failover: recreate
  -- it from the start so every entry still present is delivered.
  redis.call('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
  res = read()
end

local entries = {}
if res and res[1] then entries = res[1][2] end
if #entries > 0 then
  return {0, entries, '0-0', -1, '0-0'}
end
return {0, entries, last_id(stream), next_due(), last_id(KEYS[4])}

-- Reads the numbers the operator scales on and the admin views show.
-- Input:  KEYS[1] stream, KEYS[2] delayed, KEYS[3] paused flag
--         ARGV[1] group
-- Output: {undelivered, pending, due delayed, all delayed, paused (0|1),
--          ms of the oldest undelivered entry or -1, now (ms, Redis clock)}
local stream, delayed, paused, group = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
--!include now_ms
local now = now_ms()

local length = redis.call('XLEN', stream)
local pending, last_delivered = 0, '0-0'
if length > 0 then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local info = {}
    for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
    if info['name'] == group then
      pending = tonumber(info['pending'])
      last_delivered = info['last-delivered-id']
    end
  end
end

local oldest = -1
local first = redis.call('XRANGE', stream, '(' .. last_delivered, '+', 'COUNT', 1)
if #first > 0 then
  oldest = tonumber(string.match(first[1][1], '^(%d+)'))
end

local due = redis.call('ZCOUNT', delayed, '-inf', now)
local all_delayed = redis.call('ZCARD', delayed)
return {length - pending, pending, due, all_delayed, redis.call('EXISTS', paused), oldest, now}

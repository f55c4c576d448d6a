-- Hands claims idle past the lease back to the ready stream: each becomes a
-- new undelivered entry carrying the deliveries so far in field "d"; those
-- delivered more than the limit are poison and are removed instead.
-- Input:  KEYS[1] stream
--         ARGV[1] group, ARGV[2] consumer to claim as, ARGV[3] min idle (ms),
--         ARGV[4] max entries, ARGV[5] max deliveries
-- Output: {requeued, poison}; each a list of {task id, type, deliveries}
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local min_idle, limit, max_deliveries = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])

--!include has_group
if not has_group(stream, group) then return {{}, {}} end

local requeued, poison = {}, {}
local cursor = '0-0'
repeat
  -- JUSTID: taking the claim over to hand it back is not a delivery.
  local res = redis.call('XAUTOCLAIM', stream, group, consumer, min_idle, cursor,
    'COUNT', limit - #requeued - #poison, 'JUSTID')
  cursor = res[1]
  for _, id in ipairs(res[2]) do
    local data = {}
    local entry = redis.call('XRANGE', stream, id, id)
    if #entry > 0 then
      local fields = entry[1][2]
      for i = 1, #fields, 2 do data[fields[i]] = fields[i + 1] end
    end
    local p = redis.call('XPENDING', stream, group, id, id, 1)
    local deliveries = (tonumber(data['d']) or 0)
    if #p > 0 then deliveries = deliveries + tonumber(p[1][4]) end
    redis.call('XACK', stream, group, id)
    redis.call('XDEL', stream, id)
    if data['t'] == nil then
      -- the entry itself is gone: nothing to hand back
    elseif deliveries > max_deliveries then
      poison[#poison + 1] = {data['t'], data['y'], deliveries}
    else
      redis.call('XADD', stream, '*', 't', data['t'], 'y', data['y'], 'd', deliveries)
      requeued[#requeued + 1] = {data['t'], data['y'], deliveries}
    end
  end
until cursor == '0-0' or #requeued + #poison >= limit
return {requeued, poison}

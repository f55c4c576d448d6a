-- Takes over claims idle longer than the lease (their worker is presumed dead)
-- and separates poison jobs, delivered too many times, from the rest.
-- Input:  KEYS[1] stream
--         ARGV[1] group, ARGV[2] consumer, ARGV[3] min idle (ms),
--         ARGV[4] max entries to take, ARGV[5] max deliveries
-- Output: {reclaimed, poison}; each a list of {id, {field, value, ...}, deliveries of this entry}
--         poison entries are acknowledged and deleted here
--         An entry's field "d" counts deliveries of earlier entries of the same
--         job (recovery re-adds stalled claims as new entries); it adds to the count.
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local min_idle, limit, max_deliveries = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])

--!include has_group
if not has_group(stream, group) then return {{}, {}} end

local function earlier(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'd' then return tonumber(fields[i + 1]) or 0 end
  end
  return 0
end

local reclaimed, poison = {}, {}
local cursor = '0-0'
repeat
  local res = redis.call('XAUTOCLAIM', stream, group, consumer, min_idle, cursor, 'COUNT', limit - #reclaimed - #poison)
  cursor = res[1]
  for _, entry in ipairs(res[2]) do
    local id = entry[1]
    local p = redis.call('XPENDING', stream, group, id, id, 1)
    local deliveries = 1
    if #p > 0 then deliveries = tonumber(p[1][4]) end
    -- Poison by the job's total; the output keeps this entry's own count.
    if deliveries + earlier(entry[2]) > max_deliveries then
      redis.call('XACK', stream, group, id)
      redis.call('XDEL', stream, id)
      poison[#poison + 1] = {id, entry[2], deliveries}
    else
      reclaimed[#reclaimed + 1] = {id, entry[2], deliveries}
    end
  end
until cursor == '0-0' or #reclaimed + #poison >= limit
return {reclaimed, poison}

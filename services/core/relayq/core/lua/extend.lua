-- Extends the lease of jobs a consumer still holds, by resetting their idle
-- time; entries another consumer has taken over are left alone.
-- Input:  KEYS[1] stream
--         ARGV[1] group, ARGV[2] consumer, ARGV[3..] entry ids
-- Output: number of leases extended
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local mine = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', stream, group, ARGV[i], ARGV[i], 1)
  if #p > 0 and p[1][2] == consumer then mine[#mine + 1] = ARGV[i] end
end
if #mine == 0 then return 0 end
-- JUSTID keeps the delivery counter as it is: extending is not a redelivery.
local args = {'XCLAIM', stream, group, consumer, 0}
for _, id in ipairs(mine) do args[#args + 1] = id end
args[#args + 1] = 'JUSTID'
local claimed = redis.call(unpack(args))
return #claimed

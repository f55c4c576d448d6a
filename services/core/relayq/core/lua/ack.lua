-- Acknowledges finished jobs and deletes their entries, so XLEN counts only
-- undelivered and in-flight jobs.
-- Input:  KEYS[1] stream
--         ARGV[1] group, ARGV[2..] entry ids
-- Output: number of entries acknowledged
local stream, group = KEYS[1], ARGV[1]
local ids = {}
for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ids == 0 then return 0 end
local acked = redis.call('XACK', stream, group, unpack(ids))
redis.call('XDEL', stream, unpack(ids))
return acked

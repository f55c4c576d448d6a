-- Takes the run lock if no one holds it, and hands out the next fencing token.
-- Input:  KEYS[1] lock, KEYS[2] fencing counter (same hash tag)
--         ARGV[1] owner (random), ARGV[2] lock time to live (ms)
-- Output: {fencing token, value stored in the lock} when taken, {0, ""} when held
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, ''} end
local fence = redis.call('INCR', KEYS[2])
local value = ARGV[1] .. ':' .. fence
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return {fence, value}

-- GCRA rate limiter shared by every worker process: starts are spaced
-- period/limit apart, and up to `burst` may go at once after a quiet spell.
-- Input:  KEYS[1] limiter state (theoretical arrival time, ms)
--         ARGV[1] limit, ARGV[2] period (ms), ARGV[3] burst
-- Output: {allowed (0|1), ms to wait before trying again}
local key = KEYS[1]
local limit, period, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local interval = period / limit
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000

local tat = tonumber(redis.call('GET', key) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then
  return {0, math.ceil(allow_at - now)}
end
redis.call('SET', key, string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1)
return {1, 0}

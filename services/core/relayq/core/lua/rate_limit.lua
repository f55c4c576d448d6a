-- GCRA rate limiter shared by every worker process and gateway replica: starts
-- are spaced period/limit apart, and up to `burst` may go at once after a quiet
-- spell. Takes one start from each of several limiters in one call (the takes
-- that arrive together); two takes of one limiter are taken in order.
-- Input:  KEYS[1..] limiter states (theoretical arrival time, ms)
--         ARGV[1..] quadruples: index of the limiter in KEYS, limit, period (ms), burst
-- Output: per take, in order, {allowed (0|1), ms to wait before trying again}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local out = {}
for i = 1, #ARGV, 4 do
  local key = KEYS[tonumber(ARGV[i])]
  local limit, period, burst = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local interval = period / limit
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - burst * interval
  if now < allow_at then
    out[#out + 1] = {0, math.ceil(allow_at - now)}
  else
    redis.call('SET', key, string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1)
    out[#out + 1] = {1, 0}
  end
end
return out

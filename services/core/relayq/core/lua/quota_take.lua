-- Take one use of `amount` from every quota of the current window, or from none.
-- Input:  KEYS[1..n] one hash per quota (fields `count`, `amount`), named by its window
--         ARGV[1] amount, ARGV[2] the window's end (Unix ms)
--         ARGV[1 + 2i] max count of KEYS[i], ARGV[2 + 2i] max amount of KEYS[i] (0: no limit)
-- Output: {0, ''} when taken; else {i, 'count' | 'amount'}: KEYS[i] is spent, nothing taken
local amount = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local max_count = tonumber(ARGV[1 + 2 * i])
  local max_amount = tonumber(ARGV[2 + 2 * i])
  local used = redis.call('HMGET', key, 'count', 'amount')
  local count = tonumber(used[1] or '0')
  local spent = tonumber(used[2] or '0')
  if max_count > 0 and count + 1 > max_count then
    return {i, 'count'}
  end
  if max_amount > 0 and spent + amount > max_amount then
    return {i, 'amount'}
  end
end
for _, key in ipairs(KEYS) do
  redis.call('HINCRBY', key, 'count', 1)
  redis.call('HINCRBY', key, 'amount', amount)
  redis.call('PEXPIREAT', key, ARGV[2])
end
return {0, ''}

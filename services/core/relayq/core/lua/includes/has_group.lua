-- has_group(stream, group): true when `stream` exists and has consumer group `group`.
local function has_group(stream, group)
  if redis.call('EXISTS', stream) == 0 then return false end
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    for i = 1, #g, 2 do
      if g[i] == 'name' and g[i + 1] == group then return true end
    end
  end
  return false
end

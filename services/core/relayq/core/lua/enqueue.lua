-- Adds ready jobs to their priorities' streams in one call (auto-pipelined enqueue).
-- Input:  KEYS[1..] the streams
--         ARGV[1..] triples: index of the job's stream in KEYS, task id, type
-- Output: per job, in order, its entry id, or the error of its XADD alone
local out = {}
for i = 1, #ARGV, 3 do
  out[#out + 1] = redis.pcall('XADD', KEYS[tonumber(ARGV[i])], '*', 't', ARGV[i + 1], 'y', ARGV[i + 2])
end
return out

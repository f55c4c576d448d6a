-- Records one recovery run in the report hash. Counters always add up; the
-- last_* fields are written only if no run with a newer fencing token has
-- written them, so a run that finishes late cannot hide a newer one.
-- Input:  KEYS[1] report hash
--         ARGV[1] fencing token (0: the run never held the lock), ARGV[2] outcome,
--         ARGV[3] end time (s), ARGV[4] duration (s),
--         ARGV[5..] pairs: counter name, amount (added to "<name>_total")
-- Output: 1 if the last_* fields were written, 0 if not
local report, fence, outcome = KEYS[1], tonumber(ARGV[1]), ARGV[2]
redis.call('HINCRBY', report, 'runs_' .. outcome, 1)
for i = 5, #ARGV, 2 do
  redis.call('HINCRBY', report, ARGV[i] .. '_total', ARGV[i + 1])
end
if fence == 0 or fence < tonumber(redis.call('HGET', report, 'fence') or '0') then
  return 0
end
redis.call('HSET', report, 'fence', fence, 'last_outcome', outcome,
  'last_run_ts', ARGV[3], 'last_duration_seconds', ARGV[4])
if outcome == 'success' then
  redis.call('HSET', report, 'last_success_ts', ARGV[3])
end
return 1

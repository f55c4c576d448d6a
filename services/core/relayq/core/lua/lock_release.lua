-- Releases the run lock, only if it still holds this run's value: a run whose
-- lock expired must not delete the lock of the run that took over.
-- Input:  KEYS[1] lock
--         ARGV[1] value the run stored
-- Output: 1 if released, 0 otherwise
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0

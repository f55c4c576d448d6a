-- Extends the run lock, only while it still holds this run's value.
-- Input:  KEYS[1] lock
--         ARGV[1] value the run stored, ARGV[2] new time to live (ms)
-- Output: 1 if extended, 0 if the lock expired or another run holds it
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0

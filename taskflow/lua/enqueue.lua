-- Enqueue one job exactly as arq does, atomically (arq uses WATCH/MULTI for the same check).
-- KEYS: 1 job key, 2 result key, 3 queue sorted set
-- ARGV: 1 job id, 2 payload, 3 expiry ms, 4 score (ms)
-- Returns 1 if enqueued, 0 if a job or result with this id already exists.
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
return 1

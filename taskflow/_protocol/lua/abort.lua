-- Abort a job. A queued job is removed and gets a cancelled result at once; a running one is
-- flagged in arq's abort set for its worker (taskflow or arq) to cancel.
-- KEYS: 1 in-progress, 2 job, 3 retry counter, 4 result, 5 queue, 6 abort set, 7 failures,
--       8 notify set
-- ARGV: 1 job id, 2 cancelled result payload, 3 result ttl ms (0 keeps forever, negative
--       stores none), 4 now ms
-- Returns scripts.AbortReply: 0 already finished, 1 cancelled now, 2 signalled to its
-- worker, -1 not found.
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('ZADD', KEYS[6], ARGV[4], ARGV[1])
  return 2
end
if not redis.call('ZSCORE', KEYS[5], ARGV[1]) and redis.call('EXISTS', KEYS[2]) == 0 then
  return -1
end
redis.call('ZREM', KEYS[5], ARGV[1])
unflag(KEYS[6], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[7])
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('SET', KEYS[4], ARGV[2], 'PX', ttl)
elseif ttl == 0 then
  redis.call('SET', KEYS[4], ARGV[2])
end
notify_waiters(KEYS[8], 'i' .. ARGV[1])
return 1

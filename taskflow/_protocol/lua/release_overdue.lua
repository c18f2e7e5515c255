-- Fail one attempt of a job that is over its timeout on a worker whose event loop is
-- blocked (the monitor saw it in the worker's heartbeat record): the attempt counts as a
-- failure and the job goes back on its queue now, for the next claim (any worker's) to
-- retry or fail for good under its task's policy, told why by the note. Only if the
-- blocked worker still holds that attempt's claim: when its body returns, its finish finds
-- the claim gone and is dropped as stale, so the job never ends twice.
-- KEYS: 1 in-progress, 2 queue, 3 retry counter, 4 failures, 5 the job's note (lease_lost)
-- ARGV: 1 claim token (worker:attempt), 2 job id, 3 now ms, 4 note (JSON), 5 note ttl ms
-- Returns 1 released, 0 the claim had already moved on (finished, lapsed, released).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[5], ARGV[4], 'PX', ARGV[5])
put_back('retry', KEYS[1], KEYS[2], ARGV[2], ARGV[3], KEYS[3], KEYS[4])
return 1

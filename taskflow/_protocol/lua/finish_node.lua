-- End one attempt of a graph node's job: arq's finish (see finish.lua) plus, when the node
-- is done, storing its result, setting its state, and releasing or settling its children,
-- all in this one atomic script, so a common child is released exactly once.
-- KEYS: 1..RUN_KEYS the run's keys; then in-progress, job, retry counter, job queue,
--       abort set, failures
-- ARGV: 1 token, 2 mode (done | retry | requeue), 3 job id, 4 node index,
--       5 final state (done), 6 node result JSON (done), 7 now ms, 8 score (retry/requeue),
--       9 run id, 10 retention ms, 11 job expiry ms for released children
-- Returns 1 applied, 2 already applied (repeated call), 0 claim lost, 3 run gone.
local INPROG, JOB, RETRY, JOBQ, ABORT, FAILS = KEYS[RUN_KEYS + 1], KEYS[RUN_KEYS + 2],
  KEYS[RUN_KEYS + 3], KEYS[RUN_KEYS + 4], KEYS[RUN_KEYS + 5], KEYS[RUN_KEYS + 6]
local token, mode, job_id, i = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = tonumber(ARGV[7])
if redis.call('GET', INPROG) ~= token then
  if TERMINAL[redis.call('HGET', STATE, i)] then return 2 end
  return 0
end
if mode == 'retry' then
  redis.call('DEL', INPROG)
  redis.call('INCR', FAILS)
  redis.call('EXPIRE', FAILS, 88400)
  redis.call('ZADD', JOBQ, ARGV[8], job_id)
  redis.call('PUBLISH', 'taskflow:wake:' .. JOBQ, '1')
  if redis.call('EXISTS', META) == 1 then redis.call('HSET', STATE, i, 'retrying') end
  return 1
elseif mode == 'requeue' then
  redis.call('DEL', INPROG)
  if tonumber(redis.call('GET', RETRY) or '0') > 0 then redis.call('DECR', RETRY) end
  redis.call('ZADD', JOBQ, ARGV[8], job_id)
  redis.call('PUBLISH', 'taskflow:wake:' .. JOBQ, '1')
  if redis.call('EXISTS', META) == 1 then redis.call('HSET', STATE, i, 'queued') end
  return 1
end
redis.call('DEL', INPROG, JOB, RETRY, FAILS)
redis.call('ZREM', JOBQ, job_id)
redis.call('ZREM', ABORT, job_id)
if redis.call('EXISTS', META) == 0 then return 3 end
if TERMINAL[redis.call('HGET', STATE, i)] then return 2 end
set_terminal(i, ARGV[5], ARGV[6], now)
settle(ARGV[9], i, ARGV[5], now, tonumber(ARGV[11]))
complete_if_done(now, tonumber(ARGV[10]))
return 1

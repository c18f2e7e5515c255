-- Cancel a run: nothing starts after this returns. Pending and queued nodes end cancelled
-- here; running ones are flagged in arq's abort set for their workers. The nodes' job keys
-- are built from the prefixes in P (their ids come from the run).
-- KEYS: 1..RUN_KEYS the run's keys, RUN_KEYS+1 the run's notify set, RUN_KEYS+2 arq's
--       abort set
-- ARGV: 1 run id, 2 now ms, 3 retention ms
-- Returns the number of running nodes signalled, or -1 if the run is unknown.
if redis.call('EXISTS', META) == 0 then return -1 end
if redis.call('HGET', META, 'status') ~= 'running' then return 0 end
redis.call('HSET', META, 'cancel', '1')
local ABORT = KEYS[RUN_KEYS + 2]
local run_id, now = ARGV[1], tonumber(ARGV[2])
local total = tonumber(redis.call('HGET', META, 'total'))
local signalled = 0
local cancelled = cjson.encode({type = KIND_CANCELLED, message = 'run cancelled',
  traceback = ''})
for i = 0, total - 1 do
  local st = redis.call('HGET', STATE, i)
  if not TERMINAL[st] then
    local job_id = node_job_id(run_id, i)
    if redis.call('EXISTS', P_IN_PROGRESS .. job_id) == 1 then
      redis.call('ZADD', ABORT, now, job_id)
      signalled = signalled + 1
    else
      -- a queued job, or one whose worker died (lease lapsed), leaves its queue here
      local _, queue = static(i)
      redis.call('ZREM', queue, job_id)
      redis.call('DEL', P_JOB .. job_id, P_RETRY .. job_id, P_FAILURES .. job_id)
      set_terminal(i, 'cancelled', cancelled, now)
    end
  end
end
complete_if_done(run_id, now, tonumber(ARGV[3]))
return signalled

-- Go on with what a run has left half-way, within the budgets again: the trigger rules a
-- finished node left to apply (its children beyond SETTLE_BUDGET, or the roots of a run
-- just submitted), then the nodes a cancel has still to visit. Called by the worker whose
-- finish_node returned "more", by the submitter, and by any worker for a run in the settling
-- set past its due time (whoever was at it died between calls). Each call is atomic and the
-- run's keys say exactly where the last one stopped, so a child is visited once per ended
-- parent and a node once per cancel.
-- KEYS: 1..RUN_KEYS the run's keys, RUN_KEYS+1 the run's notify set, RUN_KEYS+2 arq's
--       abort set
-- ARGV: 1 run id, 2 now ms, 3 retention ms, 4 job expiry ms for released children, 5 lease ms
-- Returns scripts.FinishReply: 1 done (nothing left), 4 more left, 3 run gone.
local run_id, now = ARGV[1], tonumber(ARGV[2])
if redis.call('EXISTS', META) == 0 then
  redis.call('DEL', SETTLE)
  redis.call('ZREM', P_SETTLING, run_id)
  return 3
end
local work = {}
for _, raw in ipairs(redis.call('LRANGE', SETTLE, 0, -1)) do work[#work + 1] = cjson.decode(raw) end
redis.call('DEL', SETTLE)
if not settle(run_id, work, now, tonumber(ARGV[4]), tonumber(ARGV[5])) then return 4 end
if redis.call('HGET', META, 'cancel_at') then
  local _, done = cancel_some(run_id, now, KEYS[RUN_KEYS + 2])
  if not done then
    redis.call('ZADD', P_SETTLING, now + tonumber(ARGV[5]), run_id)
    return 4
  end
end
redis.call('ZREM', P_SETTLING, run_id)
complete_if_done(run_id, now, tonumber(ARGV[3]))
return 1

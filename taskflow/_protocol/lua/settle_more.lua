-- Go on applying the trigger rules a finished node left to settle (its children beyond
-- SETTLE_BUDGET): the work in the run's settle list, within the budget again. Called by the
-- worker whose finish_node returned "more", and by any worker for a run in the settling set
-- past its due time (its worker died between calls). Each call is atomic and the list says
-- exactly where the last one stopped, so a child is visited once per ended parent.
-- KEYS: 1..RUN_KEYS the run's keys, RUN_KEYS+1 the run's notify set
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
redis.call('ZREM', P_SETTLING, run_id)
complete_if_done(run_id, now, tonumber(ARGV[3]))
return 1

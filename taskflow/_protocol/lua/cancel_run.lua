-- Cancel a run: nothing starts after the first call returns (node starts refuse a run with
-- meta.cancel set). The nodes are then visited CANCEL_BUDGET per call (graph_lib.lua's
-- cancel_some): the caller repeats the call while it answers "more"; should the caller die
-- in between, the run waits in the settling set and any worker goes on (settle_more.lua).
-- KEYS: 1..RUN_KEYS the run's keys, RUN_KEYS+1 the run's notify set, RUN_KEYS+2 arq's
--       abort set
-- ARGV: 1 run id, 2 now ms, 3 retention ms, 4 lease ms
-- Returns {running nodes signalled by this call, 1 if nodes are left to visit else 0}, or
-- {-1, 0} if the run is unknown.
if redis.call('EXISTS', META) == 0 then return {-1, 0} end
if redis.call('HGET', META, 'status') ~= 'running' then return {0, 0} end
local run_id, now = ARGV[1], tonumber(ARGV[2])
if redis.call('HGET', META, 'cancel') ~= '1' then
  redis.call('HSET', META, 'cancel', '1', 'cancel_at', 0)
elseif not redis.call('HGET', META, 'cancel_at') then
  return {0, 0}  -- cancelled before: every node has been visited
end
local signalled, done = cancel_some(run_id, now, KEYS[RUN_KEYS + 2])
if not done then
  redis.call('ZADD', P_SETTLING, now + tonumber(ARGV[4]), run_id)
  return {signalled, 1}
end
if redis.call('LLEN', SETTLE) == 0 then redis.call('ZREM', P_SETTLING, run_id) end
complete_if_done(run_id, now, tonumber(ARGV[3]))
return {signalled, 0}

-- Open a run whose other hashes the client has written (in chunks, keys.SUBMIT_CHUNK fields
-- per command): write its meta, which makes it exist, then release its roots, the children
-- of the virtual node ROOTS, a SETTLE_BUDGET at a time like any node's children (the caller
-- goes on with settle_more.lua; should it die, any worker does once the lease has passed).
-- Refuses a run whose hashes are not all there: the client died or failed half-way.
-- KEYS: 1..RUN_KEYS the run's keys, RUN_KEYS+1 the run's notify set
-- ARGV: 1 run id, 2 now ms, 3 job expiry ms, 4 lease ms, 5 run max age ms, 6 total nodes,
--       7... meta field, value pairs
-- Returns scripts.FinishReply: 1 submitted, 4 submitted with roots left to release, 0 refused
-- (a hash is incomplete).
local run_id, now, total = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[6])
if redis.call('EXISTS', META) == 1 then return 0 end
if redis.call('HLEN', NODES) ~= total or redis.call('HLEN', STATIC) ~= total + 1 or
    redis.call('HLEN', STATE) ~= total then
  return 0
end
redis.call('HSET', META, unpack(ARGV, 7))
redis.call('PEXPIRE', META, tonumber(ARGV[5]))
if settle(run_id, {{ROOTS, 'succeeded', 1}}, now, tonumber(ARGV[3]), tonumber(ARGV[4])) then
  return 1
end
return 4

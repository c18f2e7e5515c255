-- Claim up to `limit` ready jobs across queues in one call, with arq's lock protocol:
-- a job is claimed by creating arq:in-progress:<id> (here holding the claimer's token, with a
-- short lease the claimer's heartbeat renews), and arq:retry:<id> counts the attempt.
-- A claimed job's score moves to the end of its lease (arq's workers skip jobs whose score
-- is in the future), so later claims do not rescan running jobs; the heartbeat moves it on
-- with the lease, and if the worker dies both lapse together.
-- The job ids are found here, so their keys are built from the prefixes in P; a graph
-- node's job (id matching NODE_JOB_ID) is started here too (node_lib.lua's node_start), saving
-- the worker a round trip per node.
-- KEYS: the queue sorted sets, in the order to serve them, then arq's abort set (last)
-- ARGV: 1 now ms, 2 limit, 3 claim token, 4 lease ms
-- Returns a flat array, 8 fields per claimed job (scripts.Claimed):
--   queue index (1-based), job id, payload (nil if expired), attempt, failures, score,
--   aborted (0/1), node start reply (graph node jobs; else nil)
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local token = ARGV[3]
local lease = tonumber(ARGV[4])
local ABORT = KEYS[#KEYS]
local abort_set = redis.call('EXISTS', ABORT) == 1
local out = {}
local claimed = 0
for qi = 1, #KEYS - 1 do
  if claimed >= limit then break end
  local offset = 0
  -- jobs locked by a plain arq worker keep their score: scan past them, boundedly
  while claimed < limit and offset < 5000 do
    local page = redis.call('ZRANGEBYSCORE', KEYS[qi], '-inf', now, 'WITHSCORES', 'LIMIT',
      offset, limit - claimed)
    if #page == 0 then break end
    for i = 1, #page, 2 do
      local id = page[i]
      if redis.call('SET', P_IN_PROGRESS .. id, token, 'NX', 'PX', lease) then
        local attempt = redis.call('INCR', P_RETRY .. id)
        if attempt == 1 then
          redis.call('EXPIRE', P_RETRY .. id, ATTEMPT_TTL)
        end
        redis.call('ZADD', KEYS[qi], now + lease, id)
        local failures = 0
        if attempt > 1 then
          failures = tonumber(redis.call('GET', P_FAILURES .. id) or '0')
        end
        local aborted = 0
        if abort_set and redis.call('ZSCORE', ABORT, id) then aborted = 1 end
        local n = #out
        local payload = redis.call('GET', P_JOB .. id)
        local started = false
        local run_id, node = string.match(id, NODE_JOB_ID)
        if run_id and payload and aborted == 0 then
          started = node_start(run_keys(run_id), node, token, now, attempt)
        end
        out[n + 1] = qi
        out[n + 2] = id
        out[n + 3] = payload
        out[n + 4] = attempt
        out[n + 5] = failures
        out[n + 6] = page[i + 1]
        out[n + 7] = aborted
        out[n + 8] = started
        claimed = claimed + 1
      else
        offset = offset + 1
      end
    end
  end
end
return out

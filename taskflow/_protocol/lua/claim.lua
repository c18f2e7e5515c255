-- Claim up to `limit` ready jobs across queues in one call, with arq's lock protocol:
-- a job is claimed by creating arq:in-progress:<id> (here holding the claimer's token, with a
-- short lease the claimer's heartbeat renews), and arq:retry:<id> counts the attempt.
-- A claimed job's score moves to the end of its lease (arq's workers skip jobs whose score
-- is in the future), so later claims do not rescan running jobs; the heartbeat moves it on
-- with the lease, and if the worker dies both lapse together.
-- KEYS: the queue sorted sets, in the order to serve them
-- ARGV: 1 now ms, 2 limit, 3 claim token, 4 lease ms
-- Returns a flat array, 8 fields per claimed job:
--   queue index (1-based), job id, payload (nil if expired), attempt, failures, score, aborted,
--   node start (for a graph node's job: node_start() of lua/node_lib.lua, done here to save
--   the worker a round trip per node; else nil)
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local token = ARGV[3]
local lease = tonumber(ARGV[4])
local abort_set = redis.call('EXISTS', 'arq:abort') == 1
local out = {}
local claimed = 0
for qi = 1, #KEYS do
  if claimed >= limit then break end
  local offset = 0
  -- jobs locked by a plain arq worker keep their score: scan past them, boundedly
  while claimed < limit and offset < 5000 do
    local page = redis.call('ZRANGEBYSCORE', KEYS[qi], '-inf', now, 'WITHSCORES', 'LIMIT',
      offset, limit - claimed)
    if #page == 0 then break end
    for i = 1, #page, 2 do
      local id = page[i]
      if redis.call('SET', 'arq:in-progress:' .. id, token, 'NX', 'PX', lease) then
        local attempt = redis.call('INCR', 'arq:retry:' .. id)
        if attempt == 1 then
          redis.call('EXPIRE', 'arq:retry:' .. id, 88400)
        end
        redis.call('ZADD', KEYS[qi], now + lease, id)
        local failures = 0
        if attempt > 1 then
          failures = tonumber(redis.call('GET', 'taskflow:failures:' .. id) or '0')
        end
        local aborted = 0
        if abort_set and redis.call('ZSCORE', 'arq:abort', id) then aborted = 1 end
        local n = #out
        local payload = redis.call('GET', 'arq:job:' .. id)
        local started = false
        local run_id, node = string.match(id, '^(%x+)%.(%d+)$')
        if run_id and payload and aborted == 0 then
          started = node_start(run_id, node, token, now, attempt)
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

-- Claim up to `limit` ready jobs across queues in one call, with arq's lock protocol:
-- a job is claimed by creating arq:in-progress:<id> (here holding the claimer's token, with a
-- short lease the claimer's heartbeat renews), and arq:retry:<id> counts the attempt.
-- KEYS: the queue sorted sets, in the order to serve them
-- ARGV: 1 now ms, 2 limit, 3 claim token, 4 lease ms
-- Returns a flat array, 7 fields per claimed job:
--   queue index (1-based), job id, payload (nil if expired), attempt, failures, score, aborted
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local token = ARGV[3]
local lease = tonumber(ARGV[4])
local out = {}
local claimed = 0
for qi = 1, #KEYS do
  if claimed >= limit then break end
  local offset = 0
  -- running jobs stay in the queue until they finish; scan past them, but boundedly
  while claimed < limit and offset < 5000 do
    local page = redis.call('ZRANGEBYSCORE', KEYS[qi], '-inf', now, 'WITHSCORES', 'LIMIT', offset, 200)
    if #page == 0 then break end
    for i = 1, #page, 2 do
      local id = page[i]
      local lock = 'arq:in-progress:' .. id
      if redis.call('SET', lock, token, 'NX', 'PX', lease) then
        local attempt = redis.call('INCR', 'arq:retry:' .. id)
        redis.call('EXPIRE', 'arq:retry:' .. id, 88400)
        local payload = redis.call('GET', 'arq:job:' .. id)
        local failures = redis.call('GET', 'taskflow:failures:' .. id) or '0'
        local aborted = 0
        if redis.call('ZSCORE', 'arq:abort', id) then aborted = 1 end
        local n = #out
        out[n + 1] = qi
        out[n + 2] = id
        out[n + 3] = payload
        out[n + 4] = attempt
        out[n + 5] = tonumber(failures)
        out[n + 6] = page[i + 1]
        out[n + 7] = aborted
        claimed = claimed + 1
        if claimed >= limit then break end
      end
    end
    offset = offset + 200
  end
end
return out

-- Fire a schedule's due tick(s), once across every worker that races to: the schedule's
-- cursor (state.next) must still be the tick the caller read, and moves on to the next
-- tick in the same call. The jobs' ids derive from (schedule, tick), and a job key that
-- exists already is left alone.
-- KEYS: 1 the schedule's state hash, 2 the queue sorted set
-- ARGV: 1 the tick the caller saw due (state.next), 2 the next tick after those fired ('' if
--       the schedule has ended), 3 definition version, 4 now ms, 5 overlap allowed (0/1),
--       6 job expiry ms, 7 skipped ticks (misfire), then per job: id, payload, score
-- Returns {outcome, jobs enqueued}: 'fired', 'taken' (another worker fired it), 'stale'
-- (the definition changed: reload it), 'paused', 'overlap' (the last job is still queued or
-- running), 'skipped' (only missed ticks were due, under misfire="skip").
local state = KEYS[1]
local st = redis.call('HMGET', state, 'version', 'next', 'paused', 'last_job')
if st[1] ~= ARGV[3] then return {'stale', 0} end
if st[2] ~= ARGV[1] then return {'taken', 0} end
local now = ARGV[4]
redis.call('HSET', state, 'next', ARGV[2], 'last_tick', ARGV[1], 'last_at', now)
if tonumber(ARGV[7]) > 0 then redis.call('HINCRBY', state, 'missed', tonumber(ARGV[7])) end
local function outcome(what)
  redis.call('HSET', state, 'last_outcome', what)
  if what ~= 'fired' then redis.call('HINCRBY', state, 'skips', 1) end
  return {what, 0}
end
if st[3] == '1' then return outcome('paused') end
if #ARGV < 8 then return outcome('skipped') end
if ARGV[5] == '0' and st[4] and (redis.call('EXISTS', P_JOB .. st[4]) == 1 or
    redis.call('EXISTS', P_IN_PROGRESS .. st[4]) == 1) then
  return outcome('overlap')
end
local expiry = tonumber(ARGV[6])
local enqueued = 0
local last = nil
for j = 8, #ARGV, 3 do
  local id = ARGV[j]
  if redis.call('SET', P_JOB .. id, ARGV[j + 1], 'PX', expiry, 'NX') then
    redis.call('ZADD', KEYS[2], tonumber(ARGV[j + 2]), id)
    enqueued = enqueued + 1
  end
  last = id
end
redis.call('HSET', state, 'last_job', last, 'last_outcome', 'fired')
redis.call('HINCRBY', state, 'fired', enqueued)
redis.call('PUBLISH', P_WAKE .. KEYS[2], '1')
return {'fired', enqueued}

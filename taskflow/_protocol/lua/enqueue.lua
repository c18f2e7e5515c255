-- Enqueue jobs exactly as arq does, atomically (arq uses WATCH/MULTI for the same check),
-- then wake the queue's idle workers (taskflow's addition; plain arq workers just poll).
-- KEYS: 1 queue sorted set, then per job: its job key, its result key
-- ARGV: 1 expiry ms, then per job: id, payload, score (ms)
-- Returns one flag per job: 1 enqueued, 0 a job or result with that id already exists.
local expiry = ARGV[1]
local out = {}
for n = 0, (#ARGV - 1) / 3 - 1 do
  local a, k = 2 + 3 * n, 2 + 2 * n
  if redis.call('EXISTS', KEYS[k], KEYS[k + 1]) > 0 then
    out[#out + 1] = 0
  else
    redis.call('SET', KEYS[k], ARGV[a + 1], 'PX', expiry)
    redis.call('ZADD', KEYS[1], ARGV[a + 2], ARGV[a])
    out[#out + 1] = 1
  end
end
redis.call('PUBLISH', P_WAKE .. KEYS[1], '1')
return out

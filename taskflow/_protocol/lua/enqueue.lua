-- Enqueue jobs exactly as arq does, atomically (arq uses WATCH/MULTI for the same check),
-- then wake the queue's idle workers (taskflow's addition; plain arq workers just poll).
-- KEYS: 1 queue sorted set
-- ARGV: 1 expiry ms, then per job: id, payload, score (ms)
-- Returns one flag per job: 1 enqueued, 0 a job or result with that id already exists.
local expiry = ARGV[1]
local out = {}
for i = 2, #ARGV, 3 do
  local id = ARGV[i]
  if redis.call('EXISTS', 'arq:job:' .. id, 'arq:result:' .. id) > 0 then
    out[#out + 1] = 0
  else
    redis.call('SET', 'arq:job:' .. id, ARGV[i + 1], 'PX', expiry)
    redis.call('ZADD', KEYS[1], ARGV[i + 2], id)
    out[#out + 1] = 1
  end
end
redis.call('PUBLISH', 'taskflow:wake:' .. KEYS[1], '1')
return out

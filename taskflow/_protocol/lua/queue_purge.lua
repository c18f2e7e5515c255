-- Delete waiting jobs whose time to run came at or before `before` (ready for longer than
-- the caller's older_than), at most `limit` per call: the queue entry, the job, its attempt
-- and failure counters. A job a worker holds stays.
-- KEYS: 1 queue
-- ARGV: 1 before (score, ms), 2 limit, 3 offset (held jobs passed by in earlier calls)
-- Returns {purged, held jobs passed by in this call, 1 if more may be left else 0}.
local before, limit, offset = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local page = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', before, 'LIMIT', offset, limit)
local purged, held = 0, 0
for _, id in ipairs(page) do
  if redis.call('EXISTS', P_IN_PROGRESS .. id) == 1 then
    held = held + 1
  else
    redis.call('ZREM', KEYS[1], id)
    redis.call('DEL', P_JOB .. id, P_RETRY .. id, P_FAILURES .. id)
    purged = purged + 1
  end
end
local more = 0
if #page == limit then more = 1 end
return {purged, held, more}

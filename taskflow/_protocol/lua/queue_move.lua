-- Move waiting jobs (ready or deferred, oldest first) from one queue to another, at most
-- `limit` per call, keeping their scores. A job a worker holds (its in-progress key exists)
-- stays: its worker removes it from the queue it claimed it from when it finishes. A claim
-- and a move are each atomic, so a job is either moved or claimed, never both.
-- KEYS: 1 source queue, 2 destination queue
-- ARGV: 1 limit, 2 offset (held jobs passed by in earlier calls)
-- Returns {moved, held jobs passed by in this call, entries left to look at (0: done)}.
local limit, offset = tonumber(ARGV[1]), tonumber(ARGV[2])
local page = redis.call('ZRANGE', KEYS[1], offset, offset + limit - 1, 'WITHSCORES')
local moved, held = 0, 0
for i = 1, #page, 2 do
  local id = page[i]
  if redis.call('EXISTS', P_IN_PROGRESS .. id) == 1 then
    held = held + 1
  else
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZADD', KEYS[2], page[i + 1], id)
    moved = moved + 1
  end
end
if moved > 0 then redis.call('PUBLISH', P_WAKE .. KEYS[2], '1') end
return {moved, held, math.max(0, redis.call('ZCARD', KEYS[1]) - offset - held)}

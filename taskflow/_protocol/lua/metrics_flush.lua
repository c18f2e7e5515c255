-- Add a worker's aggregated job metrics into the time-bucket hashes, in one call.
-- KEYS: bucket hashes
-- ARGV: per key, in order: ttl ms, number of ops, then per op: kind, field, value, where
--   kind i = HINCRBY, f = HINCRBYFLOAT, x = keep the maximum, m = keep the minimum,
--   l = keep the latest (value "<time ms> <number>": kept if its time is later),
--   s = HSET (a custom metric's declaration)
-- Returns the number of buckets written.
local a = 1
for k = 1, #KEYS do
  local key = KEYS[k]
  local ttl = ARGV[a]
  local n = tonumber(ARGV[a + 1])
  a = a + 2
  for _ = 1, n do
    local kind, field, value = ARGV[a], ARGV[a + 1], ARGV[a + 2]
    a = a + 3
    if kind == 'i' then
      redis.call('HINCRBY', key, field, value)
    elseif kind == 'f' then
      redis.call('HINCRBYFLOAT', key, field, value)
    elseif kind == 's' then
      redis.call('HSET', key, field, value)
    elseif kind == 'l' then
      local current = redis.call('HGET', key, field)
      if not current or tonumber(string.match(value, '^%S+'))
          >= tonumber(string.match(current, '^%S+')) then
        redis.call('HSET', key, field, value)
      end
    else
      local current = redis.call('HGET', key, field)
      if not current or (kind == 'x' and tonumber(value) > tonumber(current))
          or (kind == 'm' and tonumber(value) < tonumber(current)) then
        redis.call('HSET', key, field, value)
      end
    end
  end
  redis.call('PEXPIRE', key, ttl)
end
return #KEYS

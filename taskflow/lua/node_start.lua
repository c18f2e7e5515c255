-- A worker is about to run a graph node: refuse if the run is cancelled or gone, mark the
-- node running, and hand back its spec and its data parents' results in one round trip.
-- KEYS: 1..RUN_KEYS the run's keys
-- ARGV: 1 node index, 2 worker id, 3 now ms, 4 attempt
-- Returns {'run', spec, parent index, parent state, parent result, ...} or {'cancelled'}
-- or {'gone'} or {'ended', state}.
local i = ARGV[1]
if redis.call('EXISTS', META) == 0 then return {'gone'} end
if redis.call('HGET', META, 'cancel') == '1' then return {'cancelled'} end
local st = redis.call('HGET', STATE, i)
if TERMINAL[st] then return {'ended', st} end
redis.call('HSET', STATE, i, 'running')
redis.call('HSET', TIMING, i .. ':s', ARGV[3], i .. ':w', ARGV[2], i .. ':a', ARGV[4])
local out = {'run', redis.call('HGET', NODES, i)}
local _, _, _, parents = static(i)
if parents ~= '' then
  for p in string.gmatch(parents, '[^,]+') do
    out[#out + 1] = p
    out[#out + 1] = redis.call('HGET', STATE, p)
    out[#out + 1] = redis.call('HGET', RESULTS, p)
  end
end
return out

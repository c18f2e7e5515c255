-- Starting a graph node, shared by claim.lua (which starts the nodes it claims) and
-- node_start.lua; prepended to both when loaded. Key names follow keys.run().
local TERMINAL = {succeeded = true, failed = true, cancelled = true, skipped = true,
  upstream_failed = true}

-- Refuse if the run is cancelled or gone, else mark node i running and return its spec and
-- its data parents' results: {'run', spec, parent index, parent state, parent result, ...},
-- {'cancelled'}, {'gone'} or {'ended', state}.
local function node_start(run_id, i, worker, now, attempt)
  local base = 'taskflow:run:{' .. run_id .. '}:'
  local meta = base .. 'meta'
  if redis.call('EXISTS', meta) == 0 then return {'gone'} end
  if redis.call('HGET', meta, 'cancel') == '1' then return {'cancelled'} end
  local state = base .. 'state'
  local st = redis.call('HGET', state, i)
  if TERMINAL[st] then return {'ended', st} end
  redis.call('HSET', state, i, 'running')
  redis.call('HSET', base .. 'timing', i .. ':s', now, i .. ':w', worker, i .. ':a', attempt)
  local out = {'run', redis.call('HGET', base .. 'nodes', i)}
  local _, _, _, parents = string.match(redis.call('HGET', base .. 'static', i),
    '^(.-)\n(.-)\n(.-)\n(.-)\n(.*)$')
  if parents ~= '' then
    for p in string.gmatch(parents, '[^,]+') do
      out[#out + 1] = p
      out[#out + 1] = redis.call('HGET', state, p)
      out[#out + 1] = redis.call('HGET', base .. 'results', p)
    end
  end
  return out
end

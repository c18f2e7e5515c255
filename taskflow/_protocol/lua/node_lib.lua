-- Shared by the scripts that start or end graph nodes (claim, node_start, finish_node,
-- cancel_run); the generated constants are described in job_lib.lua.

local TERMINAL = {succeeded = true, failed = true, cancelled = true, skipped = true,
  upstream_failed = true}

-- A graph node's static record (codecs.encode_node_static): trigger, queue key, child
-- indexes, data-parent indexes (comma-separated), job payload.
local function parse_static(raw)
  return string.match(raw, '^(.-)\n(.-)\n(.-)\n(.-)\n(.*)$')
end

-- The arq job id of node i of run `run_id` (keys.node_job_id).
local function node_job_id(run_id, i)
  return run_id .. NODE_JOB_SEP .. i
end

-- Start node i of the run whose keys are R: refuse if the run is cancelled or gone, else
-- mark it running and return its spec and its data parents' results:
-- {'run', spec, parent index, parent state, parent result, ...}, {'cancelled'}, {'gone'}
-- or {'ended', state} (see scripts.NodeVerdict). A node with more than INLINE_PARENTS data
-- parents gets {'run', spec, 'fetch'}: its worker reads them in chunks (they have all
-- ended, so they no longer change), and this call stays short.
local function node_start(R, i, worker, now, attempt)
  if redis.call('EXISTS', R[RUN_META]) == 0 then return {'gone'} end
  if redis.call('HGET', R[RUN_META], 'cancel') == '1' then return {'cancelled'} end
  local st = redis.call('HGET', R[RUN_STATE], i)
  if TERMINAL[st] then return {'ended', st} end
  redis.call('HSET', R[RUN_STATE], i, 'running')
  redis.call('HSET', R[RUN_TIMING], i .. ':s', now, i .. ':w', worker, i .. ':a', attempt)
  local out = {'run', redis.call('HGET', R[RUN_NODES], i)}
  local _, _, _, parents = parse_static(redis.call('HGET', R[RUN_STATIC], i))
  if parents ~= '' then
    local _, commas = string.gsub(parents, ',', '')
    if commas >= INLINE_PARENTS then
      out[3] = 'fetch'
      return out
    end
    for p in string.gmatch(parents, '[^,]+') do
      out[#out + 1] = p
      out[#out + 1] = redis.call('HGET', R[RUN_STATE], p)
      out[#out + 1] = redis.call('HGET', R[RUN_RESULTS], p)
    end
  end
  return out
end

-- Shared by every script: scripts.py loads each script as
--   generated constants + lib.lua [+ graph_lib.lua] + the script itself.
-- The generated constants (from keys.py and errors.py; never spelled in Lua):
--   P            key and channel prefixes by name (keys.LUA_PREFIXES), for the keys a
--                script can only name at run time
--   KIND         failure kinds by name (errors.FailureKind), e.g. KIND.CANCELLED
--   ATTEMPT_TTL  seconds an attempt or failure counter lives (keys.ATTEMPT_COUNTER_TTL_S)
--   NODE_JOB_ID  Lua pattern of a graph node's job id, capturing run id and node index;
--                NODE_JOB_SEP joins them (keys.node_job_id)
--   RUN_FIELDS   the parts of a run's key family, in KEYS order; RI maps part -> index

local TERMINAL = {succeeded = true, failed = true, cancelled = true, skipped = true,
  upstream_failed = true}

-- Tell every client waiting on `notify_key` (a set of their channels), then forget them.
local function notify_waiters(notify_key, message)
  local waiters = redis.call('SMEMBERS', notify_key)
  if #waiters > 0 then
    for _, channel in ipairs(waiters) do redis.call('PUBLISH', channel, message) end
    redis.call('DEL', notify_key)
  end
end

-- Put a claimed job back on its queue at `score` and wake the queue's workers:
-- mode 'retry' after a failed attempt (counts a failure), 'requeue' after an interrupted
-- one (gives the attempt number back: it does not count).
local function put_back(mode, inprog, queue, job_id, score, retry_counter, failures)
  redis.call('DEL', inprog)
  if mode == 'retry' then
    redis.call('INCR', failures)
    redis.call('EXPIRE', failures, ATTEMPT_TTL)
  elseif tonumber(redis.call('GET', retry_counter) or '0') > 0 then
    redis.call('DECR', retry_counter)
  end
  redis.call('ZADD', queue, score, job_id)
  redis.call('PUBLISH', P.wake .. queue, '1')
end

-- A graph node's static record (codecs.encode_node_static): trigger, queue key, child
-- indexes, data-parent indexes (comma-separated), job payload.
local function parse_static(raw)
  return string.match(raw, '^(.-)\n(.-)\n(.-)\n(.-)\n(.*)$')
end

-- The arq job id of node i of run `run_id` (keys.node_job_id).
local function node_job_id(run_id, i)
  return run_id .. NODE_JOB_SEP .. i
end

-- The key family of run `run_id`, in RUN_FIELDS order (keys.run_keys).
local function run_keys(run_id)
  local out = {}
  for k, part in ipairs(RUN_FIELDS) do out[k] = P.run .. '{' .. run_id .. '}:' .. part end
  return out
end

-- Start node i of the run whose keys are R: refuse if the run is cancelled or gone, else
-- mark it running and return its spec and its data parents' results:
-- {'run', spec, parent index, parent state, parent result, ...}, {'cancelled'}, {'gone'}
-- or {'ended', state} (see scripts.NodeVerdict).
local function node_start(R, i, worker, now, attempt)
  if redis.call('EXISTS', R[RI.meta]) == 0 then return {'gone'} end
  if redis.call('HGET', R[RI.meta], 'cancel') == '1' then return {'cancelled'} end
  local st = redis.call('HGET', R[RI.state], i)
  if TERMINAL[st] then return {'ended', st} end
  redis.call('HSET', R[RI.state], i, 'running')
  redis.call('HSET', R[RI.timing], i .. ':s', now, i .. ':w', worker, i .. ':a', attempt)
  local out = {'run', redis.call('HGET', R[RI.nodes], i)}
  local _, _, _, parents = parse_static(redis.call('HGET', R[RI.static], i))
  if parents ~= '' then
    for p in string.gmatch(parents, '[^,]+') do
      out[#out + 1] = p
      out[#out + 1] = redis.call('HGET', R[RI.state], p)
      out[#out + 1] = redis.call('HGET', R[RI.results], p)
    end
  end
  return out
end

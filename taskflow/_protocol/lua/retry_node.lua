-- Retry a graph node that failed for good (one of an app's dead letters) as a new first
-- attempt, and bring back what its failure settled downstream, in one atomic call:
-- the descendants that never ran because of it (upstream_failed or skipped, reached through
-- nodes that never ran) become pending again, and every pending node below it has its
-- parent counts recomputed from its parents' states, so that the node's next end settles
-- them exactly once, as if it had not failed. Descendants that ran (all_done, any_failed)
-- keep their outcome. An ended run is running again, and its keys expire run max age from
-- now instead of its retention from its end. Nothing is written unless all of it is: the
-- downstream is read first, within RETRY_BUDGET state reads.
-- KEYS: 1..RUN_KEYS the run's keys, RUN_KEYS+1 the run's notify set, then the app's
--       dead-letter set, the node's dead-letter record, the queue to put the node on, and
--       the node's job, retry counter, failures and lease-lost note
-- ARGV: 1 run id, 2 node index, 3 now ms, 4 job expiry ms, 5 run max age ms
-- Returns {scripts.RetryReply, detail}: {'ok', nodes brought back}, {'run_gone', ''},
-- {'cancelled', ''}, {'not_failed', the node's state}, {'no_letter', ''}, {'settling', ''}
-- (rules of ended nodes are still being applied) or {'too_big', RETRY_BUDGET}.
local J = RUN_KEYS + 1
local DEAD_SET, LETTER, QUEUE, JOB, RETRY, FAILS, LOST = KEYS[J + 1], KEYS[J + 2],
  KEYS[J + 3], KEYS[J + 4], KEYS[J + 5], KEYS[J + 6], KEYS[J + 7]
local run_id, x, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('EXISTS', META) == 0 then return {'run_gone', ''} end
if redis.call('HGET', META, 'cancel') == '1' then return {'cancelled', ''} end
local st = redis.call('HGET', STATE, x)
if st ~= 'failed' then return {'not_failed', st or ''} end
if redis.call('EXISTS', LETTER) == 0 then return {'no_letter', ''} end
-- a node's end visits its children in budgeted calls; counts read before they are all
-- visited would be counted twice
if redis.call('LLEN', SETTLE) > 0 then return {'settling', ''} end

-- read: the nodes brought back (reached from x through nodes that never ran) and the
-- pending nodes whose counts change, with their new counts
local again = {[x] = true}  -- x and the nodes brought back: not ended once this is done
local back = {}  -- {index, state it had}
local recount, seen = {}, {}
local todo, head, reads = {x}, 1, 0
while head <= #todo do
  local _, _, kids = static(todo[head])
  head = head + 1
  for c in string.gmatch(kids, '[^,]+') do
    reads = reads + 1
    if reads > RETRY_BUDGET then return {'too_big', tostring(RETRY_BUDGET)} end
    if not seen[c] then
      local cs = redis.call('HGET', STATE, c)
      if cs == 'upstream_failed' or cs == 'skipped' then
        seen[c] = true
        again[c] = true
        back[#back + 1] = {c, cs}
        todo[#todo + 1] = c
        recount[#recount + 1] = c
      elseif cs == 'pending' then
        seen[c] = true
        recount[#recount + 1] = c
      end
    end
  end
end
local counts = {}
for _, c in ipairs(recount) do
  local parents = cjson.decode(redis.call('HGET', NODES, c))['parents']
  local pending, bad, skip = 0, 0, 0
  for _, p in ipairs(parents) do
    reads = reads + 1
    if reads > RETRY_BUDGET then return {'too_big', tostring(RETRY_BUDGET)} end
    p = tostring(p)
    local ps = (not again[p]) and redis.call('HGET', STATE, p)
    if not ps or not TERMINAL[ps] then pending = pending + 1
    elseif ps == 'skipped' then skip = skip + 1
    elseif ps ~= 'succeeded' then bad = bad + 1 end
  end
  counts[#counts + 1] = {c, pending, bad, skip}
end

-- write
local failed = 1
for _, item in ipairs(back) do
  local c = item[1]
  redis.call('HSET', STATE, c, 'pending')
  redis.call('HDEL', RESULTS, c)
  redis.call('HDEL', TIMING, c .. ':f')
  if item[2] == 'upstream_failed' then failed = failed + 1 end
end
for _, item in ipairs(counts) do
  local c = item[1]
  redis.call('HSET', PENDING, c, item[2])
  redis.call('HSET', BAD, c, item[3])
  redis.call('HSET', SKIP, c, item[4])
end
redis.call('HINCRBY', META, 'done', -1 - #back)
redis.call('HINCRBY', META, 'failed', -failed)
redis.call('HDEL', RESULTS, x)
redis.call('HDEL', TIMING, x .. ':f')
local job_id = node_job_id(run_id, x)
local _, _, _, _, payload = static(x)
redis.call('SET', JOB, payload, 'PX', tonumber(ARGV[4]))
redis.call('DEL', RETRY, FAILS, LOST)
redis.call('ZADD', QUEUE, now, job_id)
redis.call('HSET', STATE, x, 'queued')
redis.call('ZREM', DEAD_SET, job_id)
redis.call('DEL', LETTER)
if redis.call('HGET', META, 'status') ~= 'running' then
  -- the run had ended: it runs again, and must not expire (or be reaped) before it ends
  redis.call('HSET', META, 'status', 'running')
  redis.call('HDEL', META, 'finished_ms')
  redis.call('ZREM', P_REAPING, run_id)
  for k = 1, RUN_KEYS do redis.call('PEXPIRE', KEYS[k], tonumber(ARGV[5])) end
end
redis.call('PUBLISH', P_WAKE .. QUEUE, '1')
return {'ok', tostring(#back)}

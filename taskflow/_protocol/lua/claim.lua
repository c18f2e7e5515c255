-- Claim up to `limit` ready jobs across queues in one call, with arq's lock protocol:
-- a job is claimed by creating arq:in-progress:<id> (here holding the claimer's token, with a
-- short lease the claimer's heartbeat renews), and arq:retry:<id> counts the attempt.
-- The in-progress key then holds `<token>:<attempt>`: a claim is fenced per attempt, so a
-- worker whose lease lapsed and that claimed the job again cannot finish the older attempt.
-- A claimed job's score moves to the end of its lease (arq's workers skip jobs whose score
-- is in the future), so later claims do not rescan running jobs; the heartbeat moves it on
-- with the lease, and if the worker dies both lapse together.
-- The job ids are found here, so their keys are built from the prefixes in P; a graph
-- node's job (id matching NODE_JOB_ID) is started here too (node_lib.lua's node_start), saving
-- the worker a round trip per node.
-- KEYS: the queue sorted sets, in the order to serve them, then arq's abort set (last)
-- ARGV: 1 now ms, 2 limit, 3 claim token, 4 lease ms, 5... job ids to pass by (their task is
--       not registered on this worker: left for another one)
-- At most CLAIM_NODE_STARTS graph nodes are started per call (a node start reads and writes
-- the run's hashes), so a call stays short whatever the queue holds.
-- Returns a flat array, 9 fields per claimed job (scripts.Claimed):
--   queue index (1-based), job id, payload (nil if expired), attempt, failures, score,
--   aborted (0/1), node start reply (graph node jobs; else nil), bad (nil, or why the job's
--   keys cannot be read: the worker fails that job alone)
-- A queue key that cannot be read adds an entry with an empty job id and its error in `bad`.
-- Reads that may meet a key of the wrong type go through redis.pcall: an error would end the
-- script with its earlier writes kept, and every worker claiming the job would fail alike.
local function try(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then return nil, reply.err end
  return reply, nil
end

local function wrong(key, err)
  return key .. ' (a ' .. redis.call('TYPE', key).ok .. ' key): ' .. err
end

local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local token = ARGV[3]
local lease = tonumber(ARGV[4])
local ABORT = KEYS[#KEYS]
local skip = {}
for a = 5, #ARGV do skip[ARGV[a]] = true end
local abort_set = redis.call('EXISTS', ABORT) == 1 and redis.call('TYPE', ABORT).ok == 'zset'
local out = {}
local claimed = 0
local starts = 0  -- graph nodes started: each costs several times a plain claim
local function full()
  return claimed >= limit or starts >= CLAIM_NODE_STARTS
end
for qi = 1, #KEYS - 1 do
  if full() then break end
  local offset = 0
  -- jobs locked by a plain arq worker keep their score: scan past them, boundedly
  while not full() and offset < 5000 do
    local page, qerr = try('ZRANGEBYSCORE', KEYS[qi], '-inf', now, 'WITHSCORES', 'LIMIT',
      offset, limit - claimed)
    if qerr then
      local n = #out
      out[n + 1] = qi
      out[n + 2] = ''
      for f = 3, 8 do out[n + f] = false end
      out[n + 9] = wrong(KEYS[qi], qerr)
      break
    end
    if #page == 0 then break end
    for i = 1, #page, 2 do
      if full() then break end
      local id = page[i]
      if skip[id] then
        offset = offset + 1
      elseif redis.call('SET', P_IN_PROGRESS .. id, token, 'NX', 'PX', lease) then
        local bad = false
        local attempt, err = try('INCR', P_RETRY .. id)
        if err then
          bad, attempt = wrong(P_RETRY .. id, err), 1
        elseif attempt == 1 then
          redis.call('EXPIRE', P_RETRY .. id, ATTEMPT_TTL)
        end
        redis.call('SET', P_IN_PROGRESS .. id, token .. ':' .. attempt, 'PX', lease)
        redis.call('ZADD', KEYS[qi], now + lease, id)
        local failures = 0
        if attempt > 1 then
          failures = tonumber(try('GET', P_FAILURES .. id) or '0') or 0
        end
        local aborted = 0
        if abort_set and redis.call('ZSCORE', ABORT, id) then aborted = 1 end
        local n = #out
        local payload
        payload, err = try('GET', P_JOB .. id)
        if err then
          bad, payload = wrong(P_JOB .. id, err), false
        end
        local started = false
        local run_id, node = string.match(id, NODE_JOB_ID)
        if run_id and payload and aborted == 0 and not bad then
          starts = starts + 1
          local ok, reply = pcall(node_start, run_keys(run_id), node, token, now, attempt)
          if ok then
            started = reply
          else
            local why = type(reply) == 'table' and reply.err or tostring(reply)
            bad = 'graph run ' .. run_id .. ': ' .. why
          end
        end
        out[n + 1] = qi
        out[n + 2] = id
        out[n + 3] = payload
        out[n + 4] = attempt
        out[n + 5] = failures
        out[n + 6] = page[i + 1]
        out[n + 7] = aborted
        out[n + 8] = started
        out[n + 9] = bad
        claimed = claimed + 1
      else
        offset = offset + 1
      end
    end
  end
end
return out

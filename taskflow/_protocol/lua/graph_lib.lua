-- Shared by the scripts that end graph nodes (finish_node.lua, cancel_run.lua, ...), after
-- lib.lua. Their KEYS start with the run's key family (RUN_KEYS keys), then the run's
-- notify set (keys.notify(run id)).
local META, NODES, STATE, PENDING, BAD, SKIP, STATIC, RESULTS, TIMING, SETTLE =
  KEYS[RUN_META], KEYS[RUN_NODES], KEYS[RUN_STATE], KEYS[RUN_PENDING], KEYS[RUN_BAD],
  KEYS[RUN_SKIP], KEYS[RUN_STATIC], KEYS[RUN_RESULTS], KEYS[RUN_TIMING], KEYS[RUN_SETTLE]
local RUN_NOTIFY = KEYS[RUN_KEYS + 1]

local function static(i)
  return parse_static(redis.call('HGET', STATIC, i))
end

-- a node reached a terminal state: record it and count it towards the run's end
local function set_terminal(i, st, result, now)
  redis.call('HSET', STATE, i, st)
  redis.call('HSET', TIMING, i .. ':f', now)
  if result then redis.call('HSET', RESULTS, i, result) end
  redis.call('HINCRBY', META, 'done', 1)
  if st == 'failed' or st == 'upstream_failed' then
    redis.call('HINCRBY', META, 'failed', 1)
  elseif st == 'cancelled' then
    redis.call('HINCRBY', META, 'cancelled', 1)
  end
end

-- enqueue a node whose parents allow it to run, as an arq job on its queue, and wake that
-- queue's idle workers (once per queue per script call)
local woken = {}
local function release(run_id, i, now, expiry)
  local job_id = node_job_id(run_id, i)
  local _, queue, _, _, payload = static(i)
  redis.call('SET', P_JOB .. job_id, payload, 'PX', expiry)
  redis.call('ZADD', queue, now, job_id)
  redis.call('HSET', STATE, i, 'queued')
  if not woken[queue] then
    woken[queue] = true
    redis.call('PUBLISH', P_WAKE .. queue, '1')
  end
end

local function not_run(kind, parent, st)
  if parent == ROOTS then
    return cjson.encode({type = kind, traceback = '', message = 'run cancelled'})
  end
  local name = cjson.decode(redis.call('HGET', NODES, parent))['name']
  return cjson.encode({type = kind, traceback = '',
    message = 'not run: parent ' .. name .. ' ended ' .. st})
end

-- apply the trigger rules of the children of the nodes in `work` ({node, state, position}
-- items: a node that ended, how, and the byte position in its child list to go on from),
-- transitively, visiting at most SETTLE_BUDGET children; returns the work left (empty when
-- done). One visit per child per ended parent: the saved position makes a continuation
-- exact, and resuming costs nothing for the children before it. The roots are the children
-- of ROOTS, a virtual node that succeeded at submission; they run whatever their trigger.
local function settle_work(run_id, work, now, expiry)
  local cancelling = redis.call('HGET', META, 'cancel') == '1'
  local head = 1
  local visits = 0
  while head <= #work do
    local item = work[head]
    local i, st, pos = item[1], item[2], tonumber(item[3] or 1)
    local _, _, kids = static(i)
    while true do
      local from, to = string.find(kids, '[^,]+', pos)
      if not from then break end
      if visits >= SETTLE_BUDGET then
        item[3] = from
        local rest = {}
        for w = head, #work do rest[#rest + 1] = work[w] end
        return rest
      end
      local c = string.sub(kids, from, to)
      pos = to + 1
      visits = visits + 1
      -- only a pending child has rules to apply: one that ended or was released (by a
      -- parent's failure, before that parent was retried: retry_node.lua) is done with
      if redis.call('HGET', STATE, c) == 'pending' then
        local pending = redis.call('HINCRBY', PENDING, c, -1)
        local bad = tonumber(redis.call('HGET', BAD, c) or '0')
        local skip = tonumber(redis.call('HGET', SKIP, c) or '0')
        if st == 'failed' or st == 'upstream_failed' or st == 'cancelled' then
          bad = redis.call('HINCRBY', BAD, c, 1)
        elseif st == 'skipped' then
          skip = redis.call('HINCRBY', SKIP, c, 1)
        end
        local rule = static(c)
        local verdict = nil
        if i == ROOTS then
          verdict = 'run'
        elseif rule == 'all_success' then
          -- a failure decides at once; skipped-or-run waits for every parent, since a
          -- later failure must still win over an earlier skip
          if bad > 0 then verdict = 'upstream_failed'
          elseif pending == 0 then
            if skip > 0 then verdict = 'skipped' else verdict = 'run' end
          end
        elseif rule == 'none_failed' then
          if bad > 0 then verdict = 'skipped'
          elseif pending == 0 then verdict = 'run' end
        elseif pending == 0 then
          if rule == 'all_done' then verdict = 'run'
          elseif bad > 0 then verdict = 'run'
          else verdict = 'skipped' end
        end
        if verdict == 'run' and cancelling then verdict = 'cancelled' end
        if verdict == 'run' then
          release(run_id, c, now, expiry)
        elseif verdict then
          local kind = (verdict == 'skipped') and KIND_SKIPPED or
            ((verdict == 'cancelled') and KIND_CANCELLED or KIND_UPSTREAM_FAILED)
          set_terminal(c, verdict, not_run(kind, i, st), now)
          work[#work + 1] = {c, verdict, 1}
        end
      end
    end
    head = head + 1
  end
  return {}
end

-- settle `work` within the budget; what is left goes to the run's settle list and the run to
-- the settling set (due by now + lease, when any worker may resume it). True when done.
local function settle(run_id, work, now, expiry, lease)
  local rest = settle_work(run_id, work, now, expiry)
  if #rest == 0 then return true end
  for _, item in ipairs(rest) do redis.call('RPUSH', SETTLE, cjson.encode(item)) end
  local ttl = redis.call('PTTL', META)
  if ttl > 0 then redis.call('PEXPIRE', SETTLE, ttl) end
  redis.call('ZADD', P_SETTLING, now + lease, run_id)
  return false
end

-- when every node has ended: the run's final status, the retention clock starts, and the
-- clients waiting on the run are told
local function complete_if_done(run_id, now, retention)
  local meta = redis.call('HMGET', META, 'done', 'total', 'status', 'failed', 'cancel',
    'retention_ms')
  if meta[3] ~= 'running' or tonumber(meta[1]) < tonumber(meta[2]) then return end
  -- the retention chosen at submission wins over the finishing worker's setting
  retention = tonumber(meta[6] or retention)
  local final = 'succeeded'
  if meta[5] == '1' then final = 'cancelled'
  elseif tonumber(meta[4] or '0') > 0 then final = 'failed' end
  redis.call('HSET', META, 'status', final, 'finished_ms', now)
  -- every node has ended: what was left to settle or to cancel would find nothing to do
  redis.call('HDEL', META, 'cancel_at')
  redis.call('DEL', SETTLE)
  redis.call('ZREM', P_SETTLING, run_id)
  if tonumber(meta[2]) > REAP_ABOVE then
    -- a big run is deleted by a worker with UNLINK when its retention ends (the settler);
    -- its expiry stays as a backstop
    redis.call('ZADD', P_REAPING, now + retention, run_id)
    for k = 1, RUN_KEYS do redis.call('PEXPIRE', KEYS[k], retention + REAP_GRACE_MS) end
  else
    for k = 1, RUN_KEYS do redis.call('PEXPIRE', KEYS[k], retention) end
  end
  notify_waiters(RUN_NOTIFY, 'i' .. run_id)
end

-- cancel the run's nodes from index meta.cancel_at on, at most CANCEL_BUDGET of them:
-- pending and queued nodes end cancelled, running ones are flagged in arq's abort set
-- (`abort`) for their workers. Returns the running nodes signalled and whether every node
-- has been visited (else meta.cancel_at says where the next call goes on).
local function cancel_some(run_id, now, abort)
  local at = tonumber(redis.call('HGET', META, 'cancel_at') or '0')
  local total = tonumber(redis.call('HGET', META, 'total'))
  local last = math.min(at + CANCEL_BUDGET, total) - 1
  local signalled = 0
  local cancelled = cjson.encode({type = KIND_CANCELLED, message = 'run cancelled',
    traceback = ''})
  for i = at, last do
    local st = redis.call('HGET', STATE, i)
    if not TERMINAL[st] then
      local job_id = node_job_id(run_id, i)
      if redis.call('EXISTS', P_IN_PROGRESS .. job_id) == 1 then
        redis.call('ZADD', abort, now, job_id)
        signalled = signalled + 1
      else
        -- a queued job, or one whose worker died (lease lapsed), leaves its queue here
        local _, queue = static(i)
        redis.call('ZREM', queue, job_id)
        redis.call('DEL', P_JOB .. job_id, P_RETRY .. job_id, P_FAILURES .. job_id)
        set_terminal(i, 'cancelled', cancelled, now)
      end
    end
  end
  if last + 1 >= total then
    redis.call('HDEL', META, 'cancel_at')
    return signalled, true
  end
  redis.call('HSET', META, 'cancel_at', last + 1)
  return signalled, false
end

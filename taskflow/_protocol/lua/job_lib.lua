-- Shared by the scripts that end a job's attempt (finish, abort, finish_node, cancel_run).
-- scripts.py loads each script as the generated constants, then the libraries it names
-- in scripts._INCLUDES (job_lib.lua, node_lib.lua, graph_lib.lua), then the script.
-- The generated constants (from keys.py and errors.py; never spelled in Lua):
--   P_<NAME>     key and channel prefixes (keys.LUA_PREFIXES, e.g. P_JOB, P_WAKE), for
--                the keys a script can only name at run time
--   KIND_<NAME>  failure kinds (errors.FailureKind, e.g. KIND_CANCELLED)
--   ATTEMPT_TTL  seconds an attempt or failure counter lives (keys.ATTEMPT_COUNTER_TTL_S)
--   NODE_JOB_ID  Lua pattern of a graph node's job id, capturing run id and node index;
--                NODE_JOB_SEP joins them (keys.node_job_id)
--   RUN_KEYS     how many keys a run's family has; RUN_<PART> the index of each part
--                (RUN_META, RUN_STATE, ...), in keys.RUN_FIELDS order
--   run_keys(run_id)  the run's key family, in that order

-- Keys shared by every job (arq's abort set) or a job's side keys may hold the wrong type
-- (written by hand, or by another program): a write to them that fails must not stop the
-- attempt's end from being recorded, or the job would run again and fail alike forever.
local function unflag(abort_set, job_id)
  redis.pcall('ZREM', abort_set, job_id)
end

-- Tell every client waiting on `notify_key` (a set of their channels), then forget them.
-- An unreadable set is dropped: its waiters still learn by polling.
local function notify_waiters(notify_key, message)
  local waiters = redis.pcall('SMEMBERS', notify_key)
  if waiters.err then
    redis.call('DEL', notify_key)
    return
  end
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
    if type(redis.pcall('INCR', failures)) == 'table' then redis.call('SET', failures, 1) end
    redis.call('EXPIRE', failures, ATTEMPT_TTL)
  elseif tonumber(redis.call('GET', retry_counter) or '0') > 0 then
    redis.call('DECR', retry_counter)
  end
  redis.call('ZADD', queue, score, job_id)
  redis.call('PUBLISH', P_WAKE .. queue, '1')
end

-- Keep a job that failed for good as a dead letter of its app (finish.lua, finish_node.lua):
-- `payload` as stored and `record` (JSON) in the letter's hash, plus `extra` field/value
-- pairs (a graph node's name); the letter in the app's set by when it failed; its error
-- group counted. All expire `keep` ms after the last failure; `now` is ms, as a string.
local function keep_dead_letter(dead_set, letter, groups, job_id, payload, record, keep, now,
    group, sample, extra)
  redis.call('HSET', letter, 'payload', payload, 'record', record, unpack(extra))
  redis.call('PEXPIRE', letter, keep)
  redis.call('ZADD', dead_set, now, job_id)
  redis.call('ZREMRANGEBYSCORE', dead_set, '-inf', tonumber(now) - keep)
  redis.call('PEXPIRE', dead_set, keep)  -- gone with the last letter
  redis.call('HINCRBY', groups, group .. ':n', 1)
  redis.call('HSETNX', groups, group .. ':first', now)
  redis.call('HSET', groups, group .. ':last', now, group .. ':sample', sample)
  redis.call('PEXPIRE', groups, keep)
end

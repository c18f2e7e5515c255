-- End one attempt of a graph node's job: arq's finish (see finish.lua) plus, when the node
-- is done, storing its result, setting its state, and releasing or settling its children,
-- all in this one atomic script, so a common child is released exactly once.
-- KEYS: 1..RUN_KEYS the run's keys (keys.RUN_FIELDS order), RUN_KEYS+1 the run's notify set,
--       then the job's in-progress, job, retry counter, queue, abort set, failures; for a
--       node that failed for good, also the app's dead-letter set, this job's dead-letter
--       record and the app's error groups (as finish.lua's KEYS 9-11)
-- ARGV: 1 token, 2 mode (done | retry | requeue), 3 job id, 4 node index,
--       5 final state (done), 6 node result JSON (done), 7 now ms, 8 score (retry/requeue),
--       9 run id, 10 retention ms, 11 job expiry ms for released children, 12 lease ms;
--       with a dead letter, 13 its record (JSON), 14 its retention ms, 15 now ms, 16 its
--       group, 17 a sample of its error (as finish.lua's ARGV 7-11)
-- Returns scripts.FinishReply: 1 applied, 2 already applied (repeated call), 0 claim lost,
-- 3 run gone, 4 applied with children left to settle (the caller goes on with
-- settle_more.lua; past now + lease, any worker may).
local J = RUN_KEYS + 1
local INPROG, JOB, RETRY, JOBQ, ABORT, FAILS = KEYS[J + 1], KEYS[J + 2], KEYS[J + 3],
  KEYS[J + 4], KEYS[J + 5], KEYS[J + 6]
local token, mode, job_id, i = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = tonumber(ARGV[7])
if redis.call('GET', INPROG) ~= token then
  if TERMINAL[redis.call('HGET', STATE, i)] then return 2 end
  return 0
end
if mode == 'retry' or mode == 'requeue' then
  put_back(mode, INPROG, JOBQ, job_id, ARGV[8], RETRY, FAILS)
  if redis.call('EXISTS', META) == 1 then
    redis.call('HSET', STATE, i, (mode == 'retry') and 'retrying' or 'queued')
  end
  return 1
end
local letter = KEYS[J + 8]
if letter and redis.call('EXISTS', META) == 1 and not TERMINAL[redis.call('HGET', STATE, i)] then
  -- kept before anything of the node's end is written: should Redis refuse it (a key of
  -- the wrong type), the attempt's end is refused whole and its lease lapses
  local payload = redis.pcall('GET', JOB)
  if type(payload) ~= 'string' then payload = '' end
  local ok, spec = pcall(cjson.decode, redis.call('HGET', NODES, i) or '')
  local name = (ok and type(spec) == 'table' and spec['name']) or ''
  keep_dead_letter(KEYS[J + 7], letter, KEYS[J + 9], job_id, payload, ARGV[13],
    tonumber(ARGV[14]), ARGV[15], ARGV[16], ARGV[17], {'node', tostring(name)})
end
redis.call('DEL', INPROG, JOB, RETRY, FAILS)
redis.call('ZREM', JOBQ, job_id)
unflag(ABORT, job_id)
if redis.call('EXISTS', META) == 0 then return 3 end
if TERMINAL[redis.call('HGET', STATE, i)] then return 2 end
set_terminal(i, ARGV[5], ARGV[6], now)
if not settle(ARGV[9], {{i, ARGV[5], 1}}, now, tonumber(ARGV[11]), tonumber(ARGV[12])) then
  return 4
end
complete_if_done(ARGV[9], now, tonumber(ARGV[10]))
return 1

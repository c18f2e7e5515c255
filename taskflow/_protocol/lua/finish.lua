-- End one attempt of a claimed job, only if the caller still holds the claim.
-- KEYS: 1 in-progress, 2 job, 3 retry counter, 4 result, 5 queue, 6 abort set, 7 failures,
--       8 notify set (channels of clients waiting on this job); for a job that failed for
--       good, also 9 the app's dead-letter set, 10 this job's dead-letter record, 11 the
--       app's error groups (hash: <group>:n|first|last|sample, <group> = task and error type)
-- ARGV: 1 token, 2 mode (done | retry | requeue), 3 job id, 4 result payload,
--       5 result ttl ms (0 keeps forever, as arq's keep_result_forever; negative stores none;
--       taskflow's result_ttl=0 sends -1), 6 score for retry/requeue; with a dead letter,
--       7 its record (JSON), 8 its retention ms, 9 now ms, 10 its group, 11 a sample of
--       its error (message and traceback, truncated)
-- Returns scripts.FinishReply: 1 applied, 2 the job already has a result (a repeated call),
-- 0 the claim was lost (lease lapsed and another worker took the job).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  if redis.call('EXISTS', KEYS[4]) == 1 then return 2 end
  return 0
end
local mode = ARGV[2]
if mode == 'done' then
  if KEYS[10] then
    -- a dead letter keeps the job's payload as stored, to be retried as it was
    local payload = redis.pcall('GET', KEYS[2])
    if type(payload) ~= 'string' then payload = '' end
    local keep = tonumber(ARGV[8])
    redis.call('HSET', KEYS[10], 'payload', payload, 'record', ARGV[7])
    redis.call('PEXPIRE', KEYS[10], keep)
    redis.call('ZADD', KEYS[9], ARGV[9], ARGV[3])
    redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', tonumber(ARGV[9]) - keep)
    redis.call('PEXPIRE', KEYS[9], keep)  -- gone with the last letter
    local group = ARGV[10]
    redis.call('HINCRBY', KEYS[11], group .. ':n', 1)
    redis.call('HSETNX', KEYS[11], group .. ':first', ARGV[9])
    redis.call('HSET', KEYS[11], group .. ':last', ARGV[9], group .. ':sample', ARGV[11])
    redis.call('PEXPIRE', KEYS[11], keep)
  end
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[7])
  redis.call('ZREM', KEYS[5], ARGV[3])
  unflag(KEYS[6], ARGV[3])
  local ttl = tonumber(ARGV[5])
  if ttl > 0 then
    redis.call('SET', KEYS[4], ARGV[4], 'PX', ttl)
  elseif ttl == 0 then
    redis.call('SET', KEYS[4], ARGV[4])
  end
  -- waiting clients get the result itself (or, for a large one, just the id), so they need
  -- not read it back
  local message = 'i' .. ARGV[3]
  if ttl >= 0 and string.len(ARGV[4]) <= 65536 then message = 'r' .. ARGV[4] end
  notify_waiters(KEYS[8], message)
elseif mode == 'retry' or mode == 'requeue' then
  put_back(mode, KEYS[1], KEYS[5], ARGV[3], ARGV[6], KEYS[3], KEYS[7])
else
  return redis.error_reply('unknown finish mode ' .. mode)
end
return 1

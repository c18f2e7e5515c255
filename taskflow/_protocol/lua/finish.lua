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
    keep_dead_letter(KEYS[9], KEYS[10], KEYS[11], ARGV[3], payload, ARGV[7], tonumber(ARGV[8]),
      ARGV[9], ARGV[10], ARGV[11], {})
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

-- Renew the leases of a worker's running jobs, and move each one's queue score to the new
-- end of its lease (see claim.lua).
-- KEYS: pairs of (in-progress key, queue sorted set)
-- ARGV: 1 lease ms, 2 now ms, then per pair the job id and its claim's token
-- Returns the 1-based indexes of jobs whose claim this worker no longer holds.
local lost = {}
local until_ms = tonumber(ARGV[2]) + tonumber(ARGV[1])
for i = 1, #KEYS, 2 do
  local n = (i + 1) / 2
  if redis.call('GET', KEYS[i]) == ARGV[2 + 2 * n] then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
    redis.call('ZADD', KEYS[i + 1], 'XX', until_ms, ARGV[1 + 2 * n])
  else
    lost[#lost + 1] = n
  end
end
return lost

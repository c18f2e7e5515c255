-- Renew the leases of a worker's running jobs, and move each one's queue score to the new
-- end of its lease (see claim.lua).
-- KEYS: pairs of (in-progress key, queue sorted set)
-- ARGV: 1 token, 2 lease ms, 3 now ms, then the job ids, one per pair
-- Returns the 1-based indexes of jobs whose claim this worker no longer holds.
local lost = {}
local until_ms = tonumber(ARGV[3]) + tonumber(ARGV[2])
for i = 1, #KEYS, 2 do
  local n = (i + 1) / 2
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    redis.call('ZADD', KEYS[i + 1], 'XX', until_ms, ARGV[3 + n])
  else
    lost[#lost + 1] = n
  end
end
return lost

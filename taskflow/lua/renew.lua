-- Renew the leases of a worker's running jobs.
-- KEYS: in-progress keys; ARGV: 1 token, 2 lease ms
-- Returns the 1-based indexes of keys whose claim this worker no longer holds.
local lost = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  else
    lost[#lost + 1] = i
  end
end
return lost

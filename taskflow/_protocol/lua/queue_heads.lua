-- The oldest ready jobs of each queue, with the start of each job's payload (enough to read
-- its task name, the payload's second field): what the monitor needs to tell stuck kinds
-- apart, in one call whose work is bounded by the queues and `head`, not by queue depth.
-- KEYS: the queue sorted sets
-- ARGV: 1 now ms, 2 head (jobs per queue), 3 payload bytes read per job
-- Returns a flat array: per queue its job count n, then n triples (id, score, payload start;
-- '' for a missing or unreadable payload). A queue key of the wrong type counts 0 jobs.
local out = {}
local head, bytes = tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, #KEYS do
  local page = redis.pcall('ZRANGEBYSCORE', KEYS[i], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, head)
  if type(page) ~= 'table' or page.err then page = {} end
  out[#out + 1] = #page / 2
  for j = 1, #page, 2 do
    local start = redis.pcall('GETRANGE', P_JOB .. page[j], 0, bytes - 1)
    if type(start) ~= 'string' then start = '' end
    out[#out + 1] = page[j]
    out[#out + 1] = page[j + 1]
    out[#out + 1] = start
  end
end
return out

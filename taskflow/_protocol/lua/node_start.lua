-- A worker is about to run a graph node it claimed without starting it (claim.lua starts
-- the nodes it claims; this is the same step on its own, see node_lib.lua).
-- ARGV: 1 node index, 2 worker id, 3 now ms, 4 attempt, 5 run id
return node_start(ARGV[5], ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4])

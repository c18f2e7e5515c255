-- A worker is about to run a graph node it claimed without starting it (claim.lua starts
-- the nodes it claims; this is the same step on its own: node_lib.lua's node_start).
-- KEYS: the run's keys (keys.RUN_FIELDS order)
-- ARGV: 1 node index, 2 worker id, 3 now ms, 4 attempt
-- Returns the node start reply (scripts.NodeStart).
return node_start(KEYS, ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4])

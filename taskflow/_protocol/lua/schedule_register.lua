-- Store a schedule's definition and, if it is new or its definition changed, point its
-- cursor at its first tick: atomically, so that workers registering the same code race
-- harmlessly and a changed definition never fires on the old one's cursor.
-- KEYS: 1 the app's definitions hash, 2 the schedule's state hash
-- ARGV: 1 name, 2 definition JSON, 3 definition version, 4 first tick ms ('' for none)
-- Returns 1 if the cursor was (re)set, 0 if the stored definition was the same.
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('HGET', KEYS[2], 'version') == ARGV[3] then return 0 end
redis.call('HSET', KEYS[2], 'version', ARGV[3], 'next', ARGV[4])
return 1

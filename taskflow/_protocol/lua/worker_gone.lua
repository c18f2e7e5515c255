-- Note a dead worker once: only if its heartbeat record is gone and its registry entry was
-- still there (this call removes it), drop its will and append the monitor's event. Two
-- passes at once note it once; a worker whose record is back is not dead.
-- KEYS: 1 its heartbeat record, 2 the app's worker registry, 3 its will, 4 the app's events
-- ARGV: 1 worker id, 2 the event (JSON), 3 events kept (MAXLEN ~), 4 events' retention ms
-- Returns 1 noted, 0 not dead or noted already.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[3])
redis.pcall('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[2])
redis.pcall('PEXPIRE', KEYS[4], ARGV[4])
return 1

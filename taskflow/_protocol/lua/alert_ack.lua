-- Acknowledge a firing alert: it sends nothing more until it resolves.
-- KEYS: 1 the alert-id index hash, 2 the history stream
-- ARGV: 1 alert id, 2 by, 3 note, 4 now ms, 5 history max length, 6 the app's alert-state
--       key prefix (keys.AppKeys.alert_state_prefix)
-- The rule is found here, so its state key is built from ARGV 6 (keys.AppKeys.alert_state).
-- Returns {'ok', rule} or {'error', reason} (scripts.AckReply).
local rule = redis.call('HGET', KEYS[1], ARGV[1])
if not rule then return {'error', 'unknown'} end
local key = ARGV[6] .. rule
local st = redis.call('HMGET', key, 'state', 'alert_id', 'last_value')
if st[2] ~= ARGV[1] then return {'error', 'resolved'} end
if st[1] == 'acknowledged' then return {'error', 'acknowledged'} end
if st[1] ~= 'firing' then return {'error', 'resolved'} end
redis.call('HSET', key, 'state', 'acknowledged', 'acked_by', ARGV[2], 'ack_note', ARGV[3],
  'acked_at', ARGV[4])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'alert_id', ARGV[1], 'rule', rule,
  'event', 'acknowledged', 'by', ARGV[2], 'note', ARGV[3], 'at', ARGV[4],
  'value', st[3] or '')
return {'ok', rule}

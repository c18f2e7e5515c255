-- One evaluation of one alert rule by one worker; every worker evaluates every rule, and
-- this script decides, atomically, which single one of them notifies.
-- KEYS: 1 the rule's state hash, 2 the history stream, 3 the alert-id index hash
-- ARGV: 1 holds (1/0), 2 now ms, 3 for ms, 4 cooldown ms, 5 id for a new alert,
--       6 value, 7 rule name, 8 severity, 9 threshold, 10 message, 11 history max length
-- Returns {action, alert id, started ms}; action is one of
--   ok, pending, firing (no notification), acknowledged, notify_firing, notify_resolved
local st = redis.call('HMGET', KEYS[1], 'state', 'pending_since', 'alert_id', 'started_at',
  'last_notified', 'notified')
local state, pending_since, alert_id, started, last, notified = st[1] or 'ok', st[2], st[3],
  st[4], tonumber(st[5] or '-1'), st[6]
local holds, now = ARGV[1] == '1', tonumber(ARGV[2])
local for_ms, cooldown = tonumber(ARGV[3]), tonumber(ARGV[4])

local function history(event, id, at)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[11], '*', 'alert_id', id, 'rule', ARGV[7],
    'severity', ARGV[8], 'event', event, 'value', ARGV[6], 'threshold', ARGV[9],
    'message', ARGV[10], 'at', at)
end

local function may_notify()
  return last < 0 or now - last >= cooldown
end

redis.call('HSET', KEYS[1], 'last_value', ARGV[6], 'last_eval', now)
if holds then
  if state == 'ok' then
    redis.call('HSET', KEYS[1], 'state', 'pending', 'pending_since', now)
    state, pending_since = 'pending', now
  end
  if state == 'pending' then
    if now - tonumber(pending_since) < for_ms then return {'pending', '', ''} end
    -- the index keeps only each rule's latest alert: it cannot grow without bound
    if alert_id then redis.call('HDEL', KEYS[3], alert_id) end
    alert_id = ARGV[5]
    redis.call('HSET', KEYS[1], 'state', 'firing', 'alert_id', alert_id, 'started_at', now)
    redis.call('HSET', KEYS[3], alert_id, ARGV[7])
    if not may_notify() then  -- within the cooldown of the last notification: quiet
      redis.call('HSET', KEYS[1], 'notified', '0')
      history('suppressed', alert_id, now)
      return {'firing', alert_id, tostring(now)}
    end
    redis.call('HSET', KEYS[1], 'notified', '1', 'last_notified', now)
    history('firing', alert_id, now)
    return {'notify_firing', alert_id, tostring(now)}
  end
  if state == 'firing' and may_notify() then  -- still firing after a cooldown: remind
    redis.call('HSET', KEYS[1], 'notified', '1', 'last_notified', now)
    history('firing', alert_id, now)
    return {'notify_firing', alert_id, started}
  end
  return {state, alert_id or '', started or ''}
end
-- the conditions do not hold
if state == 'pending' then
  redis.call('HSET', KEYS[1], 'state', 'ok')
  redis.call('HDEL', KEYS[1], 'pending_since')
  return {'ok', '', ''}
end
if state == 'firing' or state == 'acknowledged' then
  redis.call('HSET', KEYS[1], 'state', 'ok', 'resolved_at', now)
  redis.call('HDEL', KEYS[1], 'pending_since')
  history('resolved', alert_id, now)
  if notified == '1' then return {'notify_resolved', alert_id, started} end
  return {'ok', alert_id, started}
end
return {'ok', '', ''}

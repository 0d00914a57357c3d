-- Activity heatmap, as `analytics report activity-heatmap` computes it, from the sink's table.
-- Per hour of the day (0-23, UTC, of the event's time) over the range: every stored event
-- (known type or not) and the distinct envelope user_ids; hours without events left out.
-- Parameters: @tenant_id STRING, @start_date DATE, @end_date DATE (inclusive).
WITH tenant_events AS (
  SELECT *
  FROM `events`
  WHERE tenant_id = @tenant_id
    AND timestamp >= TIMESTAMP(@start_date)
    AND timestamp < TIMESTAMP(DATE_ADD(@end_date, INTERVAL 1 DAY))
  -- insertId deduplication is best effort (about a minute): one row per event.
  QUALIFY ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY stored_at) = 1
)
SELECT
  EXTRACT(HOUR FROM timestamp AT TIME ZONE 'UTC') AS hour,
  COUNT(DISTINCT user_id) AS active_users,
  COUNT(*) AS events
FROM tenant_events
GROUP BY hour
ORDER BY hour;

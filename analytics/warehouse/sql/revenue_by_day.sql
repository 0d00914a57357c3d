-- Revenue by day, as `analytics report revenue-by-day` computes it, from the sink's table.
-- order.created totals per UTC day of the event's time and per currency (never summed
-- across currencies; none given: the pipeline's DEFAULT_CURRENCY); refunds are
-- payment.refunded amounts on the refund's own day, in the currency of its order, else of
-- its payment, else the default; net_revenue = revenue - refunds.
-- Parameters: @tenant_id STRING, @start_date DATE, @end_date DATE (inclusive),
--             @default_currency STRING (e.g. 'USD').
WITH tenant_events AS (
  -- insertId deduplication is best effort (about a minute): one row per event.
  SELECT *
  FROM `events`
  WHERE tenant_id = @tenant_id
  QUALIFY ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY stored_at) = 1
),
in_range AS (
  SELECT *
  FROM tenant_events
  WHERE timestamp >= TIMESTAMP(@start_date)
    AND timestamp < TIMESTAMP(DATE_ADD(@end_date, INTERVAL 1 DAY))
),
order_currency AS (
  SELECT JSON_VALUE(data, '$.order_id') AS order_id, ANY_VALUE(UPPER(JSON_VALUE(data, '$.currency'))) AS currency
  FROM tenant_events
  WHERE event_type = 'order.created'
  GROUP BY order_id
),
payment_currency AS (
  SELECT JSON_VALUE(data, '$.payment_id') AS payment_id, ANY_VALUE(UPPER(JSON_VALUE(data, '$.currency'))) AS currency
  FROM tenant_events
  WHERE event_type IN ('payment.processed', 'payment.failed')
  GROUP BY payment_id
),
revenue AS (
  SELECT
    DATE(timestamp) AS date,
    COALESCE(UPPER(JSON_VALUE(data, '$.currency')), @default_currency) AS currency,
    SUM(CAST(JSON_VALUE(data, '$.total_amount') AS NUMERIC)) AS revenue,
    COUNT(*) AS orders
  FROM in_range
  WHERE event_type = 'order.created'
  GROUP BY date, currency
),
refunds AS (
  SELECT
    DATE(r.timestamp) AS date,
    COALESCE(o.currency, p.currency, @default_currency) AS currency,
    SUM(CAST(JSON_VALUE(r.data, '$.refund_amount') AS NUMERIC)) AS refunds
  FROM in_range AS r
  LEFT JOIN order_currency AS o ON o.order_id = JSON_VALUE(r.data, '$.order_id')
  LEFT JOIN payment_currency AS p ON p.payment_id = JSON_VALUE(r.data, '$.payment_id')
  WHERE r.event_type = 'payment.refunded'
  GROUP BY date, currency
)
SELECT
  date,
  currency,
  ROUND(COALESCE(revenue.revenue, 0), 2) AS revenue,
  COALESCE(revenue.orders, 0) AS orders,
  ROUND(COALESCE(refunds.refunds, 0), 2) AS refunds,
  ROUND(COALESCE(revenue.revenue, 0) - COALESCE(refunds.refunds, 0), 2) AS net_revenue
FROM revenue
FULL OUTER JOIN refunds USING (date, currency)
ORDER BY date DESC, currency;

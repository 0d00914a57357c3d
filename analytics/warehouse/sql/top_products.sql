-- Top products, as `analytics report top-products` computes it, from the sink's table.
-- Units (item quantity, default 1) and revenue (item total_price, default quantity x
-- unit_price) of order.created items per product and currency, in the range by event time;
-- the @top_n best by revenue in each currency; the product's name as last sold.
-- Parameters: @tenant_id STRING, @start_date DATE, @end_date DATE (inclusive),
--             @default_currency STRING (e.g. 'USD'), @top_n INT64 (e.g. 10).
WITH orders AS (
  SELECT *
  FROM `events`
  WHERE tenant_id = @tenant_id
    AND event_type = 'order.created'
    AND timestamp >= TIMESTAMP(@start_date)
    AND timestamp < TIMESTAMP(DATE_ADD(@end_date, INTERVAL 1 DAY))
  -- insertId deduplication is best effort (about a minute): one row per event.
  QUALIFY ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY stored_at) = 1
),
items AS (
  SELECT
    JSON_VALUE(item, '$.product_id') AS product_id,
    JSON_VALUE(item, '$.name') AS name,
    o.timestamp AS sold_at,
    COALESCE(UPPER(JSON_VALUE(o.data, '$.currency')), @default_currency) AS currency,
    COALESCE(CAST(JSON_VALUE(item, '$.quantity') AS INT64), 1) AS quantity,
    COALESCE(
      CAST(JSON_VALUE(item, '$.total_price') AS NUMERIC),
      COALESCE(CAST(JSON_VALUE(item, '$.unit_price') AS NUMERIC), 0)
        * COALESCE(CAST(JSON_VALUE(item, '$.quantity') AS INT64), 1)
    ) AS total_price
  FROM orders AS o, UNNEST(JSON_QUERY_ARRAY(o.data, '$.items')) AS item
),
names AS (
  SELECT product_id, ARRAY_AGG(name ORDER BY sold_at DESC LIMIT 1)[OFFSET(0)] AS name
  FROM items
  WHERE name IS NOT NULL
  GROUP BY product_id
),
totals AS (
  SELECT product_id, currency, SUM(quantity) AS units_sold, SUM(total_price) AS revenue
  FROM items
  GROUP BY product_id, currency
)
SELECT t.product_id, n.name, t.currency, t.units_sold, ROUND(t.revenue, 2) AS revenue
FROM totals AS t
LEFT JOIN names AS n USING (product_id)
QUALIFY ROW_NUMBER() OVER (PARTITION BY t.currency ORDER BY t.revenue DESC, t.product_id) <= @top_n
ORDER BY t.currency, t.revenue DESC, t.product_id;

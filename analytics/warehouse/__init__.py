"""The warehouse sink: every stored event copied to BigQuery once, in ``events.id`` order.

- :mod:`~analytics.warehouse.rows`: the table's schema and the row of one event;
- :mod:`~analytics.warehouse.fence`: how far ``events`` can be read without skipping a
  row a slower transaction commits later;
- :mod:`~analytics.warehouse.bigquery`: the table through the real client;
- :mod:`~analytics.warehouse.sink`: the delivery runs;
- :mod:`~analytics.warehouse.status`: lag per sink, and the floor retention keeps;
- :mod:`~analytics.warehouse.backfill`: re-sending a range of days;
- ``sql/``: the dashboard queries against the table.
"""

from __future__ import annotations

from analytics.warehouse.sink import Run, deliver
from analytics.warehouse.status import undelivered_floor

__all__ = ["Run", "deliver", "undelivered_floor"]

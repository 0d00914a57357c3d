"""Ingestion: a pure handler per event type, and the writer that applies a batch at once.

:mod:`~analytics.ingest.changes` says what an event can change (plain data),
:mod:`~analytics.ingest.handlers` derives an event's changes without a database,
:mod:`~analytics.ingest.writer` checks and writes a batch's changes, and
:mod:`~analytics.ingest.alerts` recomputes the stock alerts a batch touched.
The names other modules use are re-exported here. Dead letters live in
:mod:`analytics.deadletters`.
"""

from analytics.ingest.alerts import StockKey, apply_stock_alerts, stock_alert_history
from analytics.ingest.changes import (
    ACTIVITY,
    AGGREGATES,
    APPENDED,
    COHORTS,
    COUNTERS,
    DAILY_REVENUE,
    INVENTORY,
    LOGINS,
    MOVEMENTS,
    ORDERS,
    PAYMENTS,
    PRODUCT_MONTHS,
    PRODUCT_SALES,
    REFUNDS,
    SESSIONS,
    Aggregate,
    Append,
    Change,
    Context,
    Merge,
    StockAlerts,
    Upsert,
)
from analytics.ingest.handlers import HANDLERS, Handler, changes_for, common_changes, handles
from analytics.ingest.writer import (
    BatchResult,
    Planned,
    apply_changes,
    apply_events,
    apply_planned,
    plan,
    store_raw,
    upsert_rows,
    write_changes,
)

__all__ = [
    "ACTIVITY",
    "AGGREGATES",
    "APPENDED",
    "COHORTS",
    "COUNTERS",
    "DAILY_REVENUE",
    "HANDLERS",
    "INVENTORY",
    "LOGINS",
    "MOVEMENTS",
    "ORDERS",
    "PAYMENTS",
    "PRODUCT_MONTHS",
    "PRODUCT_SALES",
    "REFUNDS",
    "SESSIONS",
    "Aggregate",
    "Append",
    "BatchResult",
    "Change",
    "Context",
    "Handler",
    "Merge",
    "Planned",
    "StockAlerts",
    "StockKey",
    "Upsert",
    "apply_changes",
    "apply_events",
    "apply_planned",
    "apply_stock_alerts",
    "changes_for",
    "common_changes",
    "handles",
    "plan",
    "stock_alert_history",
    "store_raw",
    "upsert_rows",
    "write_changes",
]

"""Reports: one query layer for every metric, shared by the CLI (and later an HTTP API).

Each report reads indexed aggregate tables (never raw JSON), always for one
tenant, and returns a list of plain row dicts whose keys and order are the
contract of ``docs/reports.md``. This package owns the registry of reports
(:data:`REPORTS`, in the order the CLI lists them) and :func:`run`; the rest
lives one idea a module:

- :mod:`~analytics.reports.query`: the question (:class:`Query`), :class:`ReportError`,
  the row type and the shared helpers (rounding happens there and nowhere else);
- :mod:`~analytics.reports.sales`: revenue-by-day, top-products, aov, conversion;
- :mod:`~analytics.reports.users`: activity-heatmap, dau/wau/mau, retention, sessions,
  geo, logins;
- :mod:`~analytics.reports.payments`: payments, failure-reasons;
- :mod:`~analytics.reports.stock`: inventory, dead-stock, alerts;
- :mod:`~analytics.reports.operations`: operations.

The query layer's names are re-exported here; a report's function is reached through
its module or ``REPORTS[name].compute``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from analytics.errors import DuplicateRegistration
from analytics.render import render
from analytics.reports import operations, payments, sales, stock, users
from analytics.reports.query import (
    CENT,
    RATE,
    TWO_DECIMAL_COLUMNS,
    Query,
    ReportError,
    Row,
    counters,
    daily_counters,
    day_of,
    hour_of_day,
    iso_day,
    iso_time,
    money,
    percentile,
    rate,
    tenants,
)

__all__ = [
    "CENT",
    "RATE",
    "REPORTS",
    "TWO_DECIMAL_COLUMNS",
    "Query",
    "Report",
    "ReportError",
    "Row",
    "counters",
    "daily_counters",
    "day_of",
    "hour_of_day",
    "iso_day",
    "iso_time",
    "money",
    "operations",
    "payments",
    "percentile",
    "rate",
    "register",
    "run",
    "sales",
    "stock",
    "tenants",
    "users",
]


@dataclass(frozen=True)
class Report:
    """A named report: the columns it prints and the function that computes its rows."""

    name: str
    columns: tuple[str, ...]
    compute: Callable[[Session, Query], list[Row]]
    summary: str

    @property
    def two_decimals(self) -> tuple[str, ...]:
        """The columns that hold amounts rounded by :func:`money` (printed as ``12.50``)."""
        return tuple(c for c in self.columns if c in TWO_DECIMAL_COLUMNS)

    def render(self, rows: list[Row], fmt: str) -> str:
        """The rows as ``analytics report --format FMT`` prints them."""
        return render(rows, self.columns, fmt, self.two_decimals)


def _columns(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(","))


REPORTS: dict[str, Report] = {}


def register(*reports: Report) -> None:
    """Add reports to :data:`REPORTS`; a second report of the same name is refused."""
    for report in reports:
        if report.name in REPORTS:
            raise DuplicateRegistration(f"A report named {report.name!r} is already registered.")
        REPORTS[report.name] = report


register(
    Report("revenue-by-day", _columns("date, currency, revenue, orders, refunds, net_revenue"),
           sales.revenue_by_day, "revenue, orders and refunds per day and currency"),
    Report("top-products", _columns("product_id, name, currency, units_sold, revenue"),
           sales.top_products, "best-selling products by revenue, per currency (--limit)"),
    Report("activity-heatmap", _columns("hour, active_users, events"),
           users.activity_heatmap, "events and active users per UTC hour of day"),
    Report("dau", _columns("date, active_users"), users.active_users("dau"), "daily active users"),
    Report("wau", _columns("date, active_users"), users.active_users("wau"),
           "weekly active users (days d-6..d)"),
    Report("mau", _columns("date, active_users"), users.active_users("mau"),
           "monthly active users (days d-29..d)"),
    Report("retention", _columns("cohort_week, size, retained"), users.retention,
           "weekly registration cohorts and how many were active each week after"),
    Report("aov", _columns("date, currency, orders, aov"), sales.aov, "average order value"),
    Report("conversion", _columns("date, orders, paid_orders, conversion_rate, abandoned"),
           sales.conversion, "orders paid, and checkouts abandoned (no payment within 24 h)"),
    Report("sessions",
           _columns("date, sessions, avg_duration_seconds, p50_seconds, p90_seconds"),
           users.sessions, "session durations from logouts"),
    Report("payments", _columns("date, processed, failed, refunded, failure_rate"),
           payments.payments, "payment outcomes per day"),
    Report("failure-reasons", _columns("failure_reason, count"), payments.failure_reasons,
           "why payments failed"),
    Report("geo", _columns("country, city, logins, users"), users.geo, "logins by place"),
    Report("inventory", _columns("product_id, sku, location_id, on_hand, low_stock_events, "
                                 "out_of_stock_events, avg_restock_hours, turnover"),
           stock.inventory, "stock levels, stock-outs, restock cycle time and turnover"),
    Report("dead-stock", _columns("product_id, sku, location_id, on_hand, last_sold_at"),
           stock.dead_stock, "stock on hand with no sale for --days days"),
    Report("alerts", _columns("created_at, alert_type, severity, message"), stock.alerts,
           "low-stock, out-of-stock and payment-failure alerts"),
    Report("logins", _columns("date, logins, users, logins_per_user"), users.logins,
           "login frequency"),
    Report("operations", _columns("date, events, dead_letters, error_rate, p50_response_ms, "
                                  "p95_response_ms"),
           operations.operations, "event volume, dead-letter rate and API response times"),
)  # fmt: skip


def run(session: Session, name: str, query: Query) -> list[Row]:
    """The rows of report ``name`` for ``query``."""
    report = REPORTS.get(name)
    if report is None:
        raise ReportError(f"unknown report {name!r}; choose from {', '.join(REPORTS)}")
    return report.compute(session, query)

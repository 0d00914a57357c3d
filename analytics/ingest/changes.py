"""What an event changes, as plain data: the aggregates, the change kinds, the handlers' context.

Handlers build these and the writer (:mod:`analytics.ingest.writer`) applies them.
Nothing here loads a model or a database driver (an import contract holds it):
an :class:`Aggregate` and an :class:`Append` name their table by its name, and
the writer resolves the name to the table; the check of values against their
columns (``analytics.storable``) is the writer's too.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias

from analytics.config import (
    DEFAULT_CURRENCY,
    DEFAULT_EVENT_TIME_MAX,
    DEFAULT_EVENT_TIME_MIN,
    Settings,
)


class Merge(enum.Enum):
    """How a column combines a new value with the one already stored."""

    SUM = "sum"  # counters: old + new
    MIN = "min"  # earliest time seen
    MAX = "max"  # latest time seen
    KEEP = "keep"  # first non-null value stays
    LAST = "last"  # newest non-null value replaces


@dataclass(frozen=True, eq=False)
class Aggregate:
    """An upserted table: its key columns and how each other column merges.

    ``latest`` maps a column to the timestamp column that orders it: the value
    with the newest timestamp wins, whatever order events arrive in.
    """

    table: str  # the table's name; the writer resolves it (this module loads no model)
    key: tuple[str, ...]
    merge: dict[str, Merge]
    latest: dict[str, str] = field(default_factory=dict)

    @property
    def columns(self) -> tuple[str, ...]:
        return self.key + tuple(self.merge) + tuple(self.latest)

    @property
    def presence(self) -> bool:
        """Nothing to merge: the row's key is all it says (a conflict leaves it as it is)."""
        return not self.merge and not self.latest

    @property
    def sums_only(self) -> tuple[str, ...]:
        """The merged columns when every one is a sum (counters), else nothing."""
        if self.latest or any(how is not Merge.SUM for how in self.merge.values()):
            return ()
        return tuple(self.merge)


#: The counters some report or rollup reads by hour: the activity heatmap (``events``, all
#: types in one row an hour) and the hourly payment failure-rate alert
#: (``payment_outcomes``: an hour's processed and failed payments, whatever their currency
#: or reason). Every other metric is counted by day (its ``hour`` is the day's midnight;
#: ``events_by_type``, ``payments_processed`` and ``payments_failed`` too): reports ask
#: for whole days, so a day's row answers them exactly, and the table holds up to 24
#: times fewer rows of them.
PAYMENT_OUTCOMES = "payment_outcomes"
HOURLY_METRICS = frozenset({"events", PAYMENT_OUTCOMES})
#: The ``payment_outcomes`` counter's dimensions.
PAYMENT_PROCESSED = "processed"
PAYMENT_FAILED = "failed"

COUNTERS = Aggregate(
    "metric_counters",
    ("tenant_id", "metric", "hour", "dimension"),
    {"count": Merge.SUM, "total": Merge.SUM},
)
#: That a user was active in an hour: the row is all (nothing to merge; a second is no change).
ACTIVITY = Aggregate("user_activity", ("tenant_id", "hour", "user_id"), {})
COHORTS = Aggregate(
    "user_cohorts",
    ("tenant_id", "user_id"),
    {"registered_at": Merge.MIN, "registration_method": Merge.KEEP, "referral_source": Merge.KEEP},
)
PRODUCT_SALES = Aggregate(
    "product_sales",
    ("tenant_id", "day", "product_id", "currency", "location_id"),
    {
        "units": Merge.SUM,
        "revenue": Merge.SUM,
        "name": Merge.LAST,
        "last_sold_at": Merge.MAX,
    },
)
#: ``product_sales`` by calendar month (``month``: its first day), for reports over months.
PRODUCT_MONTHS = Aggregate(
    "product_sales_monthly",
    ("tenant_id", "month", "product_id", "currency", "location_id"),
    {
        "units": Merge.SUM,
        "revenue": Merge.SUM,
        "name_at": Merge.MAX,
        "last_sold_at": Merge.MAX,
    },
    latest={"name": "name_at"},
)
#: A day's orders, revenue and (resolved) refunds per currency.
DAILY_REVENUE = Aggregate(
    "daily_revenue",
    ("tenant_id", "day", "currency"),
    {"orders": Merge.SUM, "revenue": Merge.SUM, "refunds": Merge.SUM},
)
ORDERS = Aggregate(
    "orders",
    ("tenant_id", "order_id"),
    {
        "status_at": Merge.MAX,
        "created_at": Merge.MIN,
        "total_amount": Merge.KEEP,
        "currency": Merge.KEEP,
        "items_count": Merge.KEEP,
        "paid_at": Merge.MIN,
        "cancelled_at": Merge.MIN,
        "fulfilled_at": Merge.MIN,
    },
    latest={"status": "status_at"},
)
PAYMENTS = Aggregate(
    "payments",
    ("tenant_id", "payment_id"),
    {
        "status_at": Merge.MAX,
        "amount": Merge.LAST,
        "currency": Merge.LAST,
        "payment_method": Merge.LAST,
        "failure_reason": Merge.LAST,
        "refunded_amount": Merge.SUM,
    },
    latest={"status": "status_at"},
)
INVENTORY = Aggregate(
    "inventory_levels",
    ("tenant_id", "product_id", "location_id"),
    {
        "level_at": Merge.MAX,
        "sku": Merge.LAST,
        "last_sold_at": Merge.MAX,
        "low_stock_events": Merge.SUM,
        "out_of_stock_events": Merge.SUM,
        "restock_events": Merge.SUM,
        "adjustment_events": Merge.SUM,
    },
    latest={"on_hand": "level_at"},
)
#: That a user logged in from a place on a day (the logins are counted in ``city_logins``).
LOGINS = Aggregate("login_locations", ("tenant_id", "day", "country", "city", "user_id"), {})
#: A day's logins from a place, whoever logged in: the geo and logins reports' logins.
CITY_LOGINS = Aggregate(
    "city_logins", ("tenant_id", "day", "country", "city"), {"logins": Merge.SUM}
)
AGGREGATES = (
    COUNTERS,
    ACTIVITY,
    COHORTS,
    PRODUCT_SALES,
    PRODUCT_MONTHS,
    DAILY_REVENUE,
    ORDERS,
    PAYMENTS,
    INVENTORY,
    LOGINS,
    CITY_LOGINS,
)

#: The counter (``metric_counters.metric``) of every event of an hour, whatever its type
#: (``dimension`` empty); ``events_by_type`` counts them by type and day.
ALL_EVENTS = "events"

#: The per-event tables an :class:`Append` writes to.
SESSIONS = "user_sessions"
REFUNDS = "refunds"
MOVEMENTS = "inventory_movements"
APPENDED = (SESSIONS, REFUNDS, MOVEMENTS)


# Changes are built several times an event and read once: plain slotted classes
# (a frozen dataclass costs ~1 us to build, these ~0.35 us; measured).


@dataclass(slots=True)
class Upsert:
    """Merge ``values`` into the row of ``aggregate`` that ``values``' key names."""

    aggregate: Aggregate
    values: dict[str, Any]


@dataclass(slots=True)
class Append:
    """Insert one row of a per-event table (refunds, sessions, inventory movements)."""

    table: str  # one of APPENDED
    values: dict[str, Any]


@dataclass(slots=True)
class StockAlerts:
    """Bring the stock alerts of a product at a location in line with its stored movements.

    ``occurred_at`` is the time of the movement that asks: the alerts before the
    product's last restock before it cannot change
    (:func:`analytics.ingest.alerts.apply_stock_alerts`).
    """

    tenant_id: str
    product_id: str
    location_id: str
    occurred_at: datetime


Change: TypeAlias = Upsert | Append | StockAlerts


# The vocabulary of stock alerts, shared by the handlers that raise them and the
# recompute (analytics.ingest.alerts) that writes them.

#: The alert each stock movement raises, with its severity; a ``restocked`` resolves them all.
STOCK_ALERTS = {"low_stock": "warning", "out_of_stock": "critical"}
RESTOCKED = "restocked"


def alert_key(kind: str, product_id: str, location_id: str) -> str:
    return f"{kind}:{product_id}@{location_id}"


def _place(sku: str | None, product_id: str, location_id: str) -> str:
    where = f" at location {location_id}" if location_id else ""
    return f"{sku or product_id}{where}"


def stock_alert_message(
    kind: str,
    sku: str | None,
    product_id: str,
    location_id: str,
    quantity: int | None = None,
    reorder_point: int | None = None,
) -> str:
    """The message of a ``low_stock`` or ``out_of_stock`` alert."""
    place = _place(sku, product_id, location_id)
    if kind == "out_of_stock":
        return f"Out of stock: {place}"
    detail = ""
    if quantity is not None:
        detail = f": {quantity} left"
        if reorder_point is not None:
            detail += f" (reorder point {reorder_point})"
    return f"Low stock alert: {place}{detail}"


@dataclass(frozen=True)
class Context:
    """What handlers and the writer may know beyond the event: deployment settings, no database."""

    default_currency: str = DEFAULT_CURRENCY
    event_time_min: datetime = DEFAULT_EVENT_TIME_MIN
    event_time_max: datetime = DEFAULT_EVENT_TIME_MAX

    @classmethod
    def from_settings(cls, settings: Settings) -> Context:
        return cls(
            default_currency=settings.default_currency,
            event_time_min=settings.event_time_min,
            event_time_max=settings.event_time_max,
        )

"""Rebuild: recompute a tenant's per-event aggregates of a date range from the raw event store.

For after a handler fix, or after aggregates were lost. Time-bucketed tables
(counters, activity, product sales, logins, sessions, refunds, stock movements)
are deleted for the range and re-derived from the events of the range. State
tables (orders, payments, stock levels, cohorts, alerts) carry sums and
last-writer-wins values across all time, so they are re-derived from all of the
tenant's events, as long as the raw store holds all of them (nothing was pruned).
Users' spans of days (``user_hours``, ``city_users``) reach across all time too:
they are recomputed from the rebuilt ``user_activity`` and ``login_locations``.
The raw store itself is never changed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from typing import Any

import orjson
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from analytics import report_rollups, rollups
from analytics.errors import AnalyticsError
from analytics.events import Event, parse
from analytics.ingest import (
    COHORTS,
    INVENTORY,
    ORDERS,
    PAYMENTS,
    PRODUCT_MONTHS,
    Change,
    Context,
    StockAlerts,
    Upsert,
    apply_changes,
)
from analytics.models import (
    Alert,
    CityLogin,
    DailyRevenue,
    InventoryLevel,
    InventoryMovement,
    LoginLocation,
    MetricCounter,
    Order,
    Payment,
    ProductSale,
    ProductSaleMonth,
    Refund,
    StoredEvent,
    UserActivity,
    UserCohort,
    UserSession,
)
from analytics.months import next_month
from analytics.retention import pruned_before

#: Tables with one row per time bucket or per event, and the column that places them in time.
BUCKETED: tuple[tuple[Any, Any], ...] = (
    (MetricCounter, MetricCounter.hour),
    (UserActivity, UserActivity.hour),
    (ProductSale, ProductSale.day),
    (DailyRevenue, DailyRevenue.day),
    (LoginLocation, LoginLocation.day),
    (CityLogin, CityLogin.day),
    (UserSession, UserSession.ended_at),
    (Refund, Refund.refunded_at),
    (InventoryMovement, InventoryMovement.occurred_at),
)
#: Tables of state accumulated over all time.
STATE = (Order, Payment, InventoryLevel, UserCohort, Alert)
STATE_AGGREGATES = (ORDERS, PAYMENTS, INVENTORY, COHORTS)
#: Stored payloads were accepted once; this only guards against a corrupted row.
NO_LIMIT = 1 << 62


def stored_events(session: Session, tenant: str, chunk: int = 1000) -> Iterator[list[Event]]:
    """The tenant's stored events in event-time order, rebuilt from their payloads."""
    last: tuple[datetime, int] | None = None
    while True:
        stmt = (
            select(StoredEvent)
            .where(StoredEvent.tenant_id == tenant)
            .order_by(StoredEvent.occurred_at, StoredEvent.id)
            .limit(chunk)
        )
        if last is not None:
            stmt = stmt.where(
                (StoredEvent.occurred_at > last[0])
                | ((StoredEvent.occurred_at == last[0]) & (StoredEvent.id > last[1]))
            )
        rows = list(session.execute(stmt).scalars())
        if not rows:
            return
        yield [
            dataclasses.replace(
                parse(
                    orjson.dumps(row.payload),
                    channel=row.channel,
                    received_at=row.received_at,
                    max_bytes=NO_LIMIT,
                    max_depth=NO_LIMIT,
                ),
                # The stored id is authoritative (a derived id hashed the unscrubbed payload).
                event_id=row.event_id,
                timestamp=row.occurred_at,
            )
            for row in rows
        ]
        last = (rows[-1].occurred_at, rows[-1].id)


class RebuildError(AnalyticsError):
    """A rebuild that would need raw events the store no longer holds."""


def rebuild(
    session: Session, tenant: str, since: date, until: date, ctx: Context
) -> dict[str, int]:
    """Recompute ``tenant``'s aggregates for ``[since, until]``; return what was replayed.

    Once raw events were pruned (:func:`analytics.retention.pruned_before`), a range
    must start at the horizon or later, and the state tables are left as they are:
    re-deriving them needs every event since the first, and the oldest are gone.
    """
    start = datetime.combine(since, time())
    end = datetime.combine(until + timedelta(days=1), time())
    # Monthly rows cannot be split by day: the months the range touches are rebuilt whole.
    month_start = datetime.combine(since.replace(day=1), time())
    month_end = datetime.combine(next_month(until), time())
    horizon = pruned_before(session)
    if horizon is not None and start < horizon:
        first = (horizon + timedelta(days=1) - timedelta(microseconds=1)).date()
        raise RebuildError(
            f"raw events before {horizon:%Y-%m-%d %H:%M} were pruned: "
            f"a rebuild can start on {first} at the earliest"
        )
    for model, column in BUCKETED:
        low, high = (since, until) if column.type.python_type is date else (start, end)
        inclusive = column <= high if column.type.python_type is date else column < high
        session.execute(delete(model).where(model.tenant_id == tenant, column >= low, inclusive))
    session.execute(
        delete(ProductSaleMonth).where(
            ProductSaleMonth.tenant_id == tenant,
            ProductSaleMonth.month >= month_start.date(),
            ProductSaleMonth.month < month_end.date(),
        )
    )
    if horizon is None:
        for model in STATE:
            session.execute(delete(model).where(model.tenant_id == tenant))

    def in_range(event: Event) -> bool:
        return start <= event.timestamp < end

    def keep(event: Event, change: Change) -> bool:
        if isinstance(change, Upsert) and change.aggregate is PRODUCT_MONTHS:
            # After pruning, a month's first events may be gone: summed from its days below.
            return horizon is None and month_start <= event.timestamp < month_end
        is_state = isinstance(change, Upsert) and change.aggregate in STATE_AGGREGATES
        if horizon is not None:
            # State kept as it is: applying its changes again would add sums twice.
            return in_range(event) and not is_state
        # Stock alerts are recomputed from all of a product's movements, those outside
        # the range (not deleted) and those of the range (appended again) alike.
        return in_range(event) or isinstance(change, StockAlerts) or is_state

    replayed = in_range_count = 0
    for chunk in stored_events(session, tenant):
        apply_changes(session, chunk, ctx, keep)
        replayed += len(chunk)
        touched = [e for e in chunk if in_range(e)]
        in_range_count += len(touched)
        rollups.mark_dirty(session, {(e.tenant_id, e.day) for e in touched})
    if horizon is not None:
        _months_from_days(session, tenant, month_start.date(), month_end.date())
    report_rollups.user_spans(session, tenant, None)
    return {"events_in_range": in_range_count, "events_replayed": replayed}


def _months_from_days(session: Session, tenant: str, first: date, end: date) -> None:
    """Sum ``product_sales_monthly`` for the months ``[first, end)`` from ``product_sales``.

    Its name is the one of the latest day carrying a name (the days keep no finer time).
    """
    rows: dict[tuple[date, str, str, str], dict[str, Any]] = {}
    for sale in session.scalars(
        select(ProductSale)
        .where(
            ProductSale.tenant_id == tenant,
            ProductSale.day >= first,
            ProductSale.day < end,
        )
        .order_by(ProductSale.day)
    ):
        month = sale.day.replace(day=1)
        key = (month, sale.product_id, sale.currency, sale.location_id)
        row = rows.setdefault(
            key,
            {
                "tenant_id": tenant,
                "month": month,
                "product_id": sale.product_id,
                "currency": sale.currency,
                "location_id": sale.location_id,
                "units": 0,
                "revenue": 0,
                "name": None,
                "name_at": None,
                "last_sold_at": sale.last_sold_at,
            },
        )
        row["units"] += sale.units
        row["revenue"] += sale.revenue
        row["last_sold_at"] = max(row["last_sold_at"], sale.last_sold_at)
        if sale.name is not None and (
            row["name_at"] is None or sale.last_sold_at >= row["name_at"]
        ):
            row["name"], row["name_at"] = sale.name, sale.last_sold_at
    if rows:
        session.execute(insert(ProductSaleMonth), list(rows.values()))

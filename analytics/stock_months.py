"""Rollup: each product's stock movements at each location, summarised per calendar month.

The inventory and dead-stock reports walked every stock movement of the tenant's
history; they now read one ``stock_monthly`` row per product, location and month
(and walk the movements of at most the partial months at either end of a range).

A row depends on its month's movements alone, so a late or rebuilt movement changes
its own month's row only: refreshing the months of the days in ``rollup_dirty_days``
keeps the rollup exact. A restock cycle (an ``out_of_stock`` to the next
``restocked``) can cross months: the row keeps what the cycle needs from either side
(:class:`~analytics.models.StockMonth`) and the reader closes it (:func:`carry`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    delete,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import Session

from analytics.db import upsert_many
from analytics.models import InventoryMovement, StockMonth
from analytics.months import month_of, next_month

OUT = "out_of_stock"
RESTOCKED = "restocked"
LOW = "low_stock"
MICROSECOND = timedelta(microseconds=1)


def micros(span: timedelta) -> int:
    return span // MICROSECOND


def summarise(movements: Iterable[tuple[str, datetime, int | None]]) -> dict[str, Any]:
    """A month's row from its movements ``(kind, occurred_at, quantity_after)`` in order."""
    row: dict[str, Any] = {
        "low_stock": 0,
        "out_of_stock": 0,
        "level_sum": 0,
        "levels": 0,
        "on_hand": None,
        "first_out_at": None,
        "first_restock_at": None,
        "cycles": 0,
        "cycle_micros": 0,
        "open_at": None,
    }
    opened: datetime | None = None
    for kind, at, after in movements:
        if after is not None:
            row["on_hand"] = after
            row["level_sum"] += after
            row["levels"] += 1
        if kind == LOW:
            row["low_stock"] += 1
        elif kind == OUT:
            row["out_of_stock"] += 1
            if opened is None:
                opened = at
                if row["first_restock_at"] is None:
                    row["first_out_at"] = at
        elif kind == RESTOCKED:
            if row["first_restock_at"] is None:
                # What this one closes depends on the months before: closed when read.
                row["first_restock_at"] = at
            elif opened is not None:
                row["cycles"] += 1
                row["cycle_micros"] += micros(at - opened)
            opened = None
    row["open_at"] = opened
    return row


@dataclass(slots=True)
class Carried:
    """What a product's earlier months hand to the next: the open stock-out, the last level."""

    open_since: datetime | None = None
    on_hand: int | None = None


def carry(state: Carried, month: StockMonth | Any) -> int | None:
    """Move ``state`` over one month's row; return the micros of the cycle its first restock
    closes (``None`` when it closes none)."""
    if month.on_hand is not None:
        state.on_hand = month.on_hand
    if month.first_restock_at is None:
        if state.open_since is None:
            state.open_since = month.first_out_at
        return None
    opener = state.open_since if state.open_since is not None else month.first_out_at
    state.open_since = month.open_at
    return micros(month.first_restock_at - opener) if opener is not None else None


def midnight(day: date) -> datetime:
    return datetime.combine(day, time())


def movements(
    tenant: str, low: datetime, high: datetime | None
) -> Select[str, str, str, datetime, int | None]:
    """The movements of ``[low, high)`` per product and location, in event-time order."""
    stmt = (
        select(
            InventoryMovement.product_id,
            InventoryMovement.location_id,
            InventoryMovement.kind,
            InventoryMovement.occurred_at,
            InventoryMovement.quantity_after,
        )
        .where(InventoryMovement.tenant_id == tenant, InventoryMovement.occurred_at >= low)
        .order_by(
            InventoryMovement.product_id,
            InventoryMovement.location_id,
            InventoryMovement.occurred_at,
            InventoryMovement.id,
        )
    )
    return stmt.where(InventoryMovement.occurred_at < high) if high is not None else stmt


def recompute(session: Session, tenant: str, first: date, last: date) -> int:
    """Recompute ``tenant``'s rows of every month that holds a day of ``[first, last]``."""
    start, final = month_of(first), month_of(last)
    # December 9999 has no month after it: no upper bound then.
    end = midnight(next_month(final)) if final < _LAST_MONTH else None
    by_key: dict[tuple[str, str, date], list[tuple[str, datetime, int | None]]] = {}
    for product, location, kind, at, after in session.execute(
        movements(tenant, midnight(start), end)
    ):
        by_key.setdefault((product, location, month_of(at.date())), []).append((kind, at, after))
    rows = [
        {"tenant_id": tenant, "product_id": p, "location_id": loc, "month": m, **summarise(moves)}
        for (p, loc, m), moves in by_key.items()
    ]
    window = and_(
        StockMonth.tenant_id == tenant, StockMonth.month >= start, StockMonth.month <= final
    )
    stale = [
        tuple(row)
        for row in session.execute(
            select(StockMonth.product_id, StockMonth.location_id, StockMonth.month).where(window)
        )
        if tuple(row) not in by_key
    ]
    if stale:
        session.execute(
            delete(StockMonth).where(
                window,
                tuple_(StockMonth.product_id, StockMonth.location_id, StockMonth.month).in_(stale),
            )
        )
    if rows:
        # closes_micros is not among them: close_cycles sets it below.
        columns = [name for name in rows[0] if name not in _KEY]

        def build(insert: Any) -> Any:
            stmt = insert(StockMonth)
            table = StockMonth.__table__.c
            return stmt.on_conflict_do_update(
                index_elements=list(_KEY),
                set_={name: stmt.excluded[name] for name in columns},
                # A row that did not change is not rewritten (no dead row left behind).
                where=or_(*(table[name].is_distinct_from(stmt.excluded[name]) for name in columns)),
            )

        upsert_many(session, StockMonth, build, rows, order_by=_KEY)
    close_cycles(session, tenant, start, final)
    return len(rows)


def close_cycles(session: Session, tenant: str, start: date, final: date) -> int:
    """Set ``closes_micros`` of the restock months that months ``[start, final]`` may change.

    The cycle a month's first restock closes depends on the months since the previous
    restock month (its ``open_at``, then the first ``out_of_stock`` after it) and on
    nothing before: so each product is carried from its last restock month before
    ``start``, and the months set are its restock months from ``start`` up to its first
    one after ``final``. Returns how many rows changed.
    """
    key = (StockMonth.product_id, StockMonth.location_id)
    restocks = and_(StockMonth.tenant_id == tenant, StockMonth.first_restock_at.is_not(None))
    before = (
        select(*key, func.max(StockMonth.month).label("low"))
        .where(restocks, StockMonth.month < start)
        .group_by(*key)
        .subquery()
    )
    after = (
        select(*key, func.min(StockMonth.month).label("high"))
        .where(restocks, StockMonth.month > final)
        .group_by(*key)
        .subquery()
    )

    # Only products with a cycle to set from ``start`` on: one never restocked since is
    # not read back to its first month.
    targets = (
        select(*key)
        .where(
            StockMonth.tenant_id == tenant,
            StockMonth.month >= start,
            or_(StockMonth.first_restock_at.is_not(None), StockMonth.closes_micros.is_not(None)),
        )
        .group_by(*key)
        .subquery()
    )

    def same_key(bound: Any) -> ColumnElement[bool]:
        return and_(
            bound.c.product_id == StockMonth.product_id,
            bound.c.location_id == StockMonth.location_id,
        )

    stmt = (
        select(*key, *_CARRIED)
        .join(targets, same_key(targets))
        .outerjoin(before, same_key(before))
        .outerjoin(after, same_key(after))
        .where(
            StockMonth.tenant_id == tenant,
            or_(before.c.low.is_(None), StockMonth.month >= before.c.low),
            or_(after.c.high.is_(None), StockMonth.month <= after.c.high),
        )
        .order_by(*key, StockMonth.month)
    )
    changed: list[dict[str, Any]] = []
    current: tuple[str, str] | None = None
    state = Carried()
    for row in session.execute(stmt):
        if (row.product_id, row.location_id) != current:
            current, state = (row.product_id, row.location_id), Carried()
        closed = carry(state, row)
        # A month whose restock is gone (a rebuild) closes nothing: its value is cleared.
        if row.month >= start and closed != row.closes_micros:
            changed.append(
                {
                    "tenant_id": tenant,
                    "product_id": row.product_id,
                    "location_id": row.location_id,
                    "month": row.month,
                    "closes_micros": closed,
                }
            )
    if changed:
        # An ORM bulk update by primary key: one executemany.
        session.execute(update(StockMonth), changed)
    return len(changed)


_CARRIED = (
    StockMonth.month,
    StockMonth.on_hand,
    StockMonth.first_out_at,
    StockMonth.first_restock_at,
    StockMonth.open_at,
    StockMonth.closes_micros,
)


_KEY = ("tenant_id", "product_id", "location_id", "month")
_LAST_MONTH = month_of(date.max)


def refresh(session: Session, tenant: str, changed: Iterable[date]) -> None:
    """Recompute the months of the days that received events."""
    for month in sorted({month_of(day) for day in changed}):
        recompute(session, tenant, month, month)

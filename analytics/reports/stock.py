"""Stock reports: inventory, dead-stock, the alerts report, and the alerts still open.

All of them except the alerts walk the stock movements (:func:`_stock`) and name a product at a
location by its SKU.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from analytics.models import Alert, InventoryLevel, InventoryMovement
from analytics.reports import sold as sales
from analytics.reports.query import Query, Row, iso_time, money, rate


@dataclass
class _Stock:
    """What the movements of one product at one location say."""

    on_hand: int | None = None
    low: int = 0
    out: int = 0
    cycles: list[float] = field(default_factory=list)
    levels: list[int] = field(default_factory=list)
    in_range: bool = False


def _stock(session: Session, q: Query) -> dict[tuple[str, str], _Stock]:
    """Walk every stock movement up to the end of the range, in event-time order."""
    stmt = (
        select(
            InventoryMovement.product_id,
            InventoryMovement.location_id,
            InventoryMovement.kind,
            InventoryMovement.occurred_at,
            InventoryMovement.quantity_after,
        )
        .where(InventoryMovement.tenant_id == q.tenant)
        .order_by(
            InventoryMovement.product_id,
            InventoryMovement.location_id,
            InventoryMovement.occurred_at,
            InventoryMovement.id,
        )
    )
    if q.end is not None:
        stmt = stmt.where(InventoryMovement.occurred_at < q.end)
    stock: dict[tuple[str, str], _Stock] = defaultdict(_Stock)
    open_since: dict[tuple[str, str], datetime] = {}
    for product, location, kind, at, after in session.execute(stmt):
        key = (product, location)
        s = stock[key]
        if after is not None:
            s.on_hand = after
        in_range = q.start is None or at >= q.start
        if kind == "out_of_stock" and key not in open_since:
            open_since[key] = at
        elif kind == "restocked" and key in open_since:
            started = open_since.pop(key)
            if in_range:
                s.cycles.append((at - started).total_seconds() / 3600)
        if not in_range:
            continue
        s.in_range = True
        s.low += kind == "low_stock"
        s.out += kind == "out_of_stock"
        if after is not None:
            s.levels.append(after)
    return stock


def _skus(session: Session, tenant: str) -> dict[tuple[str, str], str | None]:
    return {
        (product, location): sku
        for product, location, sku in session.execute(
            select(InventoryLevel.product_id, InventoryLevel.location_id, InventoryLevel.sku).where(
                InventoryLevel.tenant_id == tenant
            )
        )
    }


def _by_sku(rows: list[Row]) -> list[Row]:
    return sorted(
        rows, key=lambda r: (r["sku"] is None, r["sku"] or "", r["product_id"], r["location_id"])
    )


def inventory(session: Session, q: Query) -> list[Row]:
    stock = _stock(session, q)
    skus = _skus(session, q.tenant)
    sold = {
        key: units
        for key, (units, _) in sales.sold(session, q, "product_id", "location_id").items()
    }
    rows = []
    for (product, location), s in stock.items():
        if not s.in_range:
            continue
        average = Decimal(sum(s.levels)) / len(s.levels) if s.levels else None
        rows.append(
            {
                "product_id": product,
                "sku": skus.get((product, location)),
                "location_id": location,
                "on_hand": s.on_hand,
                "low_stock_events": s.low,
                "out_of_stock_events": s.out,
                "avg_restock_hours": money(Decimal(str(sum(s.cycles) / len(s.cycles))))
                if s.cycles
                else None,
                "turnover": rate(sold.get((product, location), 0), average) if average else None,
            }
        )
    return _by_sku(rows)


def dead_stock(session: Session, q: Query) -> list[Row]:
    whole = Query(q.tenant, None, q.until, now=q.now, default_currency=q.default_currency)
    stock = _stock(session, whole)
    skus = _skus(session, q.tenant)
    reference = q.end or q.now
    cutoff = reference - timedelta(days=q.days)
    last_sale = sales.last_sales(session, q.tenant, reference)
    reported = select(
        InventoryLevel.product_id, InventoryLevel.location_id, InventoryLevel.last_sold_at
    ).where(
        InventoryLevel.tenant_id == q.tenant,
        InventoryLevel.last_sold_at.is_not(None),
        InventoryLevel.last_sold_at < reference,
    )
    for product, location, at in session.execute(reported):
        key = (product, location)
        if at is not None and (key not in last_sale or at > last_sale[key]):
            last_sale[key] = at
    rows = []
    for key, s in stock.items():
        if not s.on_hand or s.on_hand <= 0:
            continue
        sold_at = last_sale.get(key)
        if sold_at is not None and sold_at >= cutoff:
            continue
        rows.append(
            {
                "product_id": key[0],
                "sku": skus.get(key),
                "location_id": key[1],
                "on_hand": s.on_hand,
                "last_sold_at": iso_time(sold_at),
            }
        )
    return _by_sku(rows)


def alerts(session: Session, q: Query) -> list[Row]:
    return _alert_rows(session, q.tenant, q.between(Alert.created_at))


def open_alerts(session: Session, tenant: str) -> list[Row]:
    """The tenant's alerts not resolved yet (the rows of the alerts report), newest first.

    No date range: an alert raised long ago that is still open is still worth a look.
    """
    return _alert_rows(session, tenant, Alert.resolved_at.is_(None))


def _alert_rows(session: Session, tenant: str, condition: ColumnElement[bool]) -> list[Row]:
    from analytics import rollups

    rollups.refresh_dirty(session, tenant)  # payment-failure alerts come from rollups
    return [
        {
            "created_at": iso_time(created),
            "alert_type": kind,
            "severity": severity,
            "message": message,
        }
        for created, kind, severity, message in session.execute(
            select(Alert.created_at, Alert.alert_type, Alert.severity, Alert.message)
            .where(Alert.tenant_id == tenant, condition)
            .order_by(Alert.created_at.desc(), Alert.id.desc())
        )
    ]

"""Stock reports: inventory, dead-stock, the alerts report, and the alerts still open.

All of them except the alerts walk the stock movements (:func:`_stock`) and name a product at a
location by its SKU.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from analytics.models import Alert, InventoryLevel, StockMonth
from analytics.months import month_of
from analytics.reports import sold as sales
from analytics.reports.query import Query, Row, iso_time, iso_time_of, money, rate, refreshed
from analytics.reports.sold import Split
from analytics.stock_months import (
    LOW,
    OUT,
    RESTOCKED,
    Carried,
    carry,
    micros,
    midnight,
    movements,
)

#: Restock cycles are summed in microseconds and reported in hours.
HOUR_MICROS = 3_600_000_000


@dataclass
class _Stock:
    """What the movements of one product at one location say."""

    on_hand: int | None = None
    low: int = 0
    out: int = 0
    cycles: int = 0
    cycle_micros: int = 0
    level_sum: int = 0
    levels: int = 0
    in_range: bool = False

    def closed(self, span: int | None) -> None:
        if span is not None:
            self.cycles += 1
            self.cycle_micros += span


Key = tuple[str, str]


def _stock(session: Session, q: Query) -> dict[Key, _Stock]:
    """What the stock movements up to the end of the range say, per product and location.

    Months wholly in the range (and every month before it) come from the monthly
    rollup; only the movements of a partial month at either end are walked.
    """
    refreshed(session, q.tenant)
    split = Split.of(q.since, q.until)
    lead = month_of(q.since) if q.since is not None else None
    limit = split.end_month if split.months else lead
    stmt = select(*_MONTH_COLUMNS).where(StockMonth.tenant_id == q.tenant)
    if limit is not None:
        stmt = stmt.where(StockMonth.month < limit)
    stock: dict[Key, _Stock] = defaultdict(_Stock)
    carried: dict[Key, Carried] = defaultdict(Carried)
    at_lead: dict[Key, Carried] = {}
    for row in session.execute(stmt.order_by(*_MONTH_COLUMNS[:3])):
        key = (row.product_id, row.location_id)
        state = carried[key]
        if lead is not None and row.month >= lead and key not in at_lead:
            at_lead[key] = replace(state)
        s = stock[key]
        closed = carry(state, row)
        s.on_hand = state.on_hand
        if split.months and (split.first_month is None or row.month >= split.first_month):
            s.in_range = True
            s.low += row.low_stock
            s.out += row.out_of_stock
            s.level_sum += row.level_sum
            s.levels += row.levels
            s.closed(closed)
            s.cycles += row.cycles
            s.cycle_micros += row.cycle_micros
    walk = _Walk(session, q, stock)
    if not split.months:
        assert lead is not None  # no whole month: the range has a start
        walk(carried, midnight(lead), q.end, q.start)
        return stock
    if lead is not None and split.first_month is not None and lead < split.first_month:
        states = {key: at_lead.get(key) or replace(state) for key, state in carried.items()}
        walk(states, midnight(lead), midnight(split.first_month), q.start, on_hand=False)
    if split.end_month is not None and q.end is not None and midnight(split.end_month) < q.end:
        walk(carried, midnight(split.end_month), q.end, None)
    return stock


_MONTH_COLUMNS = (
    StockMonth.product_id,
    StockMonth.location_id,
    StockMonth.month,
    StockMonth.low_stock,
    StockMonth.out_of_stock,
    StockMonth.level_sum,
    StockMonth.levels,
    StockMonth.on_hand,
    StockMonth.first_out_at,
    StockMonth.first_restock_at,
    StockMonth.cycles,
    StockMonth.cycle_micros,
    StockMonth.open_at,
)


@dataclass
class _Walk:
    """Walks the movements of part of a month, in event-time order, into ``stock``."""

    session: Session
    q: Query
    stock: dict[Key, _Stock]

    def __call__(
        self,
        states: dict[Key, Carried],
        low: datetime,
        high: datetime | None,
        count_from: datetime | None,
        on_hand: bool = True,
    ) -> None:
        """Movements in ``[low, high)``, counted from ``count_from``, from ``states``."""
        stmt = movements(self.q.tenant, low, high)
        for product, location, kind, at, after in self.session.execute(stmt):
            key = (product, location)
            s = self.stock[key]
            state = states.setdefault(key, Carried())
            if after is not None and on_hand:
                s.on_hand = after
            in_range = count_from is None or at >= count_from
            if kind == OUT and state.open_since is None:
                state.open_since = at
            elif kind == RESTOCKED and state.open_since is not None:
                started, state.open_since = state.open_since, None
                if in_range:
                    s.closed(micros(at - started))
            if not in_range:
                continue
            s.in_range = True
            s.low += kind == LOW
            s.out += kind == OUT
            if after is not None:
                s.level_sum += after
                s.levels += 1


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


def _totals(session: Session, q: Query) -> dict[Key, _Stock]:
    """:func:`_stock` over all history, summed in SQL: a restock cycle that crosses months
    is stored by the month whose restock closes it (``closes_micros``), so nothing is
    carried from month to month here."""
    stock = _on_hand(session, q)  # refreshes the dirty months first
    key = (StockMonth.product_id, StockMonth.location_id)
    totals = select(
        *key,
        func.sum(StockMonth.low_stock),
        func.sum(StockMonth.out_of_stock),
        func.sum(StockMonth.level_sum),
        func.sum(StockMonth.levels),
        func.sum(StockMonth.cycles) + func.count(StockMonth.closes_micros),
        func.sum(StockMonth.cycle_micros) + func.coalesce(func.sum(StockMonth.closes_micros), 0),
    ).where(StockMonth.tenant_id == q.tenant)
    for product, location, low, out, level_sum, levels, cycles, cycle_micros in session.execute(
        totals.group_by(*key)
    ):
        s = stock[(product, location)]
        s.in_range = True
        s.low, s.out = int(low), int(out)
        s.level_sum, s.levels = int(level_sum), int(levels)
        s.cycles, s.cycle_micros = int(cycles), int(cycle_micros)
    return stock


def inventory(session: Session, q: Query) -> list[Row]:
    """Stock levels, stock-outs, restock cycle times and turnover per product and location.

    Over all history, one summed row per product and location (:func:`_totals`); over a
    range, the months it covers are carried in order (:func:`_stock`), at a cost that
    grows with the months before its end.
    """
    whole = q.since is None and q.until is None
    stock = _totals(session, q) if whole else _stock(session, q)
    skus = _skus(session, q.tenant)
    sold = {
        key: units
        for key, (units, _) in sales.sold(session, q, "product_id", "location_id").items()
    }
    rows = []
    for (product, location), s in stock.items():
        if not s.in_range:
            continue
        average = Decimal(s.level_sum) / s.levels if s.levels else None
        rows.append(
            {
                "product_id": product,
                "sku": skus.get((product, location)),
                "location_id": location,
                "on_hand": s.on_hand,
                "low_stock_events": s.low,
                "out_of_stock_events": s.out,
                "avg_restock_hours": money(Decimal(s.cycle_micros) / s.cycles / HOUR_MICROS)
                if s.cycles
                else None,
                "turnover": rate(sold.get((product, location), 0), average) if average else None,
            }
        )
    return _by_sku(rows)


def _on_hand(session: Session, q: Query) -> dict[Key, _Stock]:
    """Each product's last stated level up to the end of the range (``--since`` ignored).

    The latest month that states one, picked in SQL, then the movements of a partial
    last month: no need to carry restock cycles through every month.
    """
    refreshed(session, q.tenant)
    split = Split.of(None, q.until)
    ranked = select(
        StockMonth.product_id,
        StockMonth.location_id,
        StockMonth.on_hand,
        func.row_number()
        .over(
            partition_by=(StockMonth.product_id, StockMonth.location_id),
            order_by=StockMonth.month.desc(),
        )
        .label("latest"),
    ).where(StockMonth.tenant_id == q.tenant, StockMonth.on_hand.is_not(None))
    if split.end_month is not None:
        ranked = ranked.where(StockMonth.month < split.end_month)
    latest = ranked.subquery()
    stock: dict[Key, _Stock] = defaultdict(_Stock)
    for product, location, level in session.execute(
        select(latest.c.product_id, latest.c.location_id, latest.c.on_hand).where(
            latest.c.latest == 1
        )
    ):
        stock[(product, location)].on_hand = level
    if split.end_month is not None and q.end is not None and midnight(split.end_month) < q.end:
        _Walk(session, q, stock)({}, midnight(split.end_month), q.end, None)
    return stock


def dead_stock(session: Session, q: Query) -> list[Row]:
    stock = _on_hand(session, q)
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
    refreshed(session, tenant)  # payment-failure alerts come from rollups
    created_at = iso_time_of(session, Alert.created_at)
    return [
        {
            "created_at": created,
            "alert_type": kind,
            "severity": severity,
            "message": message,
        }
        # Through the connection: plain rows, without the ORM's per-row work (a year of a
        # busy tenant's alerts is tens of thousands of rows; measured ~2x faster).
        for created, kind, severity, message in session.connection().execute(
            select(created_at, Alert.alert_type, Alert.severity, Alert.message)
            .where(Alert.tenant_id == tenant, condition)
            .order_by(Alert.created_at.desc(), Alert.id.desc())
        )
    ]

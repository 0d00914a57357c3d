"""What was sold over a range, read from whole months and the edge days around them.

``product_sales`` has a row per product, day, currency and location, so a year of
it is a year of rows per product; ``product_sales_monthly`` holds the same sums per
calendar month. A range reads the months it covers whole from the monthly table and
only the days before the first and after the last whole month from the daily one:
at most ~60 days of daily rows whatever the history's length.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session

from analytics.models import ProductSale, ProductSaleMonth
from analytics.months import month_of, next_month
from analytics.reports.query import Query


@dataclass(frozen=True)
class Split:
    """A range of days as whole months (``[first_month, end_month)``) and edge day ranges.

    ``None`` bounds are open. ``months`` is false when no month lies wholly inside.
    """

    months: bool
    first_month: date | None
    end_month: date | None
    edges: tuple[tuple[date | None, date | None], ...]

    @classmethod
    def of(cls, since: date | None, until: date | None) -> Split:
        first = since if since is None or since.day == 1 else next_month(since)
        after = until + timedelta(days=1) if until is not None else None
        end = month_of(after) if after is not None else None
        if first is not None and end is not None and first >= end:
            return cls(False, None, None, ((since, until),))
        edges: list[tuple[date | None, date | None]] = []
        if since is not None and first is not None and since < first:
            edges.append((since, first - timedelta(days=1)))
        if until is not None and end is not None and end <= until:
            edges.append((end, until))
        return cls(True, first, end, tuple(edges))

    def month_filter(self) -> ColumnElement[bool]:
        conditions = []
        if self.first_month is not None:
            conditions.append(ProductSaleMonth.month >= self.first_month)
        if self.end_month is not None:
            conditions.append(ProductSaleMonth.month < self.end_month)
        return and_(True, *conditions)

    def day_filters(self) -> list[ColumnElement[bool]]:
        filters = []
        for low, high in self.edges:
            conditions = []
            if low is not None:
                conditions.append(ProductSale.day >= low)
            if high is not None:
                conditions.append(ProductSale.day <= high)
            filters.append(and_(True, *conditions))
        return filters


def _both(
    session: Session, q: Query, columns: tuple[str, ...], *aggregates: str
) -> list[tuple[Any, ...]]:
    """``columns`` and the sums of ``aggregates`` per group, from the months and the edges."""
    split = Split.of(q.since, q.until)
    rows: list[tuple[Any, ...]] = []
    sources: list[tuple[Any, ColumnElement[bool]]] = []
    if split.months:
        sources.append((ProductSaleMonth, split.month_filter()))
    sources += [(ProductSale, condition) for condition in split.day_filters()]
    for model, condition in sources:
        group = [getattr(model, name) for name in columns]
        sums = [func.sum(getattr(model, name)) for name in aggregates]
        rows += session.execute(
            select(*group, *sums).where(model.tenant_id == q.tenant, condition).group_by(*group)
        ).all()
    return rows


def sold(session: Session, q: Query, *columns: str) -> dict[tuple[str, ...], tuple[int, Decimal]]:
    """Units and revenue sold in the range, per ``columns`` (of product, currency, location)."""
    totals: dict[tuple[str, ...], list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for row in _both(session, q, columns, "units", "revenue"):
        total = totals[tuple(row[: len(columns)])]
        total[0] += int(row[-2])
        total[1] += row[-1]
    return {key: (units, revenue) for key, (units, revenue) in totals.items()}


def _latest_named(model: Any, at: Any, tenant: str, condition: ColumnElement[bool]) -> Any:
    """Per product, the row of ``model`` with the latest ``at`` that carries a name."""
    ranked = (
        select(
            model.product_id,
            model.name,
            at.label("at"),
            func.row_number().over(partition_by=model.product_id, order_by=at.desc()).label("rank"),
        )
        .where(model.tenant_id == tenant, condition, model.name.is_not(None))
        .subquery()
    )
    return select(ranked.c.product_id, ranked.c.name, ranked.c.at).where(ranked.c.rank == 1)


def names(session: Session, q: Query) -> dict[str, str]:
    """Each product's name: the one of its latest sale in the range carrying one."""
    split = Split.of(q.since, q.until)
    found: list[Any] = []
    if split.months:
        found += session.execute(
            _latest_named(
                ProductSaleMonth, ProductSaleMonth.name_at, q.tenant, split.month_filter()
            )
        ).all()
    for condition in split.day_filters():
        found += session.execute(
            _latest_named(ProductSale, ProductSale.last_sold_at, q.tenant, condition)
        ).all()
    latest: dict[str, tuple[datetime, str]] = {}
    for product, name, at in found:
        if product not in latest or at > latest[product][0]:
            latest[product] = (at, name)
    return {product: name for product, (_, name) in latest.items()}


def last_sales(session: Session, tenant: str, before: datetime) -> dict[tuple[str, str], datetime]:
    """The latest sale before ``before`` of each product at each location.

    As ``product_sales`` answers it: a day's row counts when its latest sale is before
    ``before``. Months before ``before``'s month are read whole from the monthly table.
    """
    month = month_of(before.date())
    months = (
        select(
            ProductSaleMonth.product_id,
            ProductSaleMonth.location_id,
            func.max(ProductSaleMonth.last_sold_at),
        )
        .where(ProductSaleMonth.tenant_id == tenant, ProductSaleMonth.month < month)
        .group_by(ProductSaleMonth.product_id, ProductSaleMonth.location_id)
    )
    days = (
        select(ProductSale.product_id, ProductSale.location_id, func.max(ProductSale.last_sold_at))
        .where(
            ProductSale.tenant_id == tenant,
            ProductSale.day >= month,
            ProductSale.last_sold_at < before,
        )
        .group_by(ProductSale.product_id, ProductSale.location_id)
    )
    latest: dict[tuple[str, str], datetime] = {}
    for product, location, at in [*session.execute(months), *session.execute(days)]:
        key = (product, location)
        if at is not None and (key not in latest or at > latest[key]):
            latest[key] = at
    return latest

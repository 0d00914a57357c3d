"""Sales reports: revenue-by-day, top-products, aov and conversion (with checkout abandonment)."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from analytics.models import DailyRevenue, MetricCounter, Order, Payment, Refund
from analytics.reports import sold
from analytics.reports.query import Query, Row, counters, day_of, iso_day, money, refreshed

#: Checkout abandonment: no processed payment within this long of the order.
ABANDONMENT_WINDOW = timedelta(hours=24)


def revenue_by_day(session: Session, q: Query) -> list[Row]:
    cells: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"revenue": Decimal(0), "orders": 0, "refunds": Decimal(0)}
    )
    for d, currency, orders, revenue, refunds in session.execute(
        select(
            DailyRevenue.day,
            DailyRevenue.currency,
            DailyRevenue.orders,
            DailyRevenue.revenue,
            DailyRevenue.refunds,
        ).where(DailyRevenue.tenant_id == q.tenant, q.on_days(DailyRevenue.day))
    ):
        cell = cells[(iso_day(d), currency)]
        cell["revenue"] += revenue
        cell["orders"] += int(orders)
        cell["refunds"] += refunds
    # Refunds the writer could not resolve (stored before their order): the currency of
    # their order, else of their payment, looked up by primary key. (Outer joins let
    # PostgreSQL scan every order and payment of the tenant.)
    order_currency = (
        select(Order.currency)
        .where(Order.tenant_id == Refund.tenant_id, Order.order_id == Refund.order_id)
        .scalar_subquery()
    )
    payment_currency = (
        select(Payment.currency)
        .where(Payment.tenant_id == Refund.tenant_id, Payment.payment_id == Refund.payment_id)
        .scalar_subquery()
    )
    unresolved = (
        select(
            day_of(Refund.refunded_at).label("day"),
            func.coalesce(order_currency, payment_currency, q.default_currency).label("currency"),
            Refund.amount,
        )
        .where(
            Refund.tenant_id == q.tenant, Refund.currency.is_(None), q.between(Refund.refunded_at)
        )
        .subquery()
    )
    late = select(unresolved.c.day, unresolved.c.currency, func.sum(unresolved.c.amount)).group_by(
        unresolved.c.day, unresolved.c.currency
    )
    for d, cur, total in session.execute(late):
        cells[(iso_day(d), cur)]["refunds"] += total
    rows = [
        {
            "date": d,
            "currency": cur,
            "revenue": money(cell["revenue"]),
            "orders": cell["orders"],
            "refunds": money(cell["refunds"]),
            "net_revenue": money(cell["revenue"] - cell["refunds"]),
        }
        for (d, cur), cell in cells.items()
    ]
    rows.sort(key=lambda r: r["currency"])
    rows.sort(key=lambda r: r["date"], reverse=True)
    return rows


def top_products(session: Session, q: Query) -> list[Row]:
    totals = sold.sold(session, q, "product_id", "currency")
    product_names = sold.names(session, q)
    by_currency: dict[str, list[Row]] = defaultdict(list)
    for (product, currency), (units, revenue) in totals.items():
        by_currency[currency].append(
            {
                "product_id": product,
                "name": product_names.get(product),
                "currency": currency,
                "units_sold": int(units),
                "revenue": revenue,
            }
        )
    rows: list[Row] = []
    for currency in sorted(by_currency):
        ranked = sorted(by_currency[currency], key=lambda r: (-r["revenue"], r["product_id"]))
        for row in ranked[: q.limit]:
            rows.append({**row, "revenue": money(row["revenue"])})
    return rows


def aov(session: Session, q: Query) -> list[Row]:
    day = day_of(MetricCounter.hour)
    rows = [
        {
            "date": iso_day(d),
            "currency": currency,
            "orders": int(count),
            "aov": money(total / count),
        }
        for d, currency, count, total in session.execute(
            counters(session, q, "revenue", day, MetricCounter.dimension)
        )
        if count
    ]
    return sorted(rows, key=lambda r: (r["date"], r["currency"]))


def conversion(session: Session, q: Query) -> list[Row]:
    from analytics import report_rollups

    refreshed(session, q.tenant)
    return report_rollups.conversion_report(session, q)

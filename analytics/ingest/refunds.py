"""The currency of a refund, resolved by the writer when its order is already known.

A refund is counted in the currency of its order, else of its payment, else the
default. An order's currency is set by its first ``order.created`` and never changes
after (``orders.currency`` merges with KEEP), so a refund whose order is stored (or
created in the same batch) has its final currency at once: the writer stores it on
the refund row and adds the amount to ``daily_revenue``. A refund stored before its
order (a late ``order.created``, or one committing at the same moment in another
worker) keeps a null currency and is resolved when revenue-by-day reads it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from analytics.db import dialect_of, driver_rows, keyed_rows_sql
from analytics.ingest.changes import DAILY_REVENUE, ORDERS, Aggregate
from analytics.models import Order

#: Order ids looked up per statement on SQLite (bound parameters stay far below every limit).
_CHUNK = 500


def resolve_refunds(
    session: Session,
    refunds: list[dict[str, Any]],
    upserts: dict[Aggregate, list[dict[str, Any]]],
) -> None:
    """Set ``currency`` on the refund rows whose order is known, and count them per day.

    ``upserts`` are the batch's upserts not written yet: an ``order.created`` of this
    batch counts as known, and the refunds' ``daily_revenue`` rows join the batch's
    own (one statement a table, so concurrent writers lock rows in one order).
    """
    wanted = {(r["tenant_id"], r["order_id"]) for r in refunds if r["order_id"]}
    if not wanted:
        return
    known: dict[tuple[str, str], str] = {}
    # KEEP: the first currency of the batch wins over later ones, a stored one over all.
    for row in upserts.get(ORDERS, ()):
        key = (row["tenant_id"], row["order_id"])
        if key in wanted and row.get("currency") is not None:
            known.setdefault(key, row["currency"])
    keys = sorted(wanted)
    for tenant, order, currency in _stored_currencies(session, keys):
        if currency is not None:  # filtered in SQL; for the type checker
            known[(tenant, order)] = currency
    totals: dict[tuple[str, Any, str], Any] = defaultdict(int)
    for refund in refunds:
        currency = known.get((refund["tenant_id"], refund["order_id"]))
        if currency is None:
            continue
        refund["currency"] = currency
        totals[(refund["tenant_id"], refund["refunded_at"].date(), currency)] += refund["amount"]
    upserts.setdefault(DAILY_REVENUE, []).extend(
        {
            "tenant_id": tenant,
            "day": day,
            "currency": currency,
            "orders": 0,
            "revenue": 0,
            "refunds": amount,
        }
        for (tenant, day, currency), amount in totals.items()
    )


#: PostgreSQL: the stored currencies of the orders whose keys come as two arrays, one
#: probe of the primary key a key, sent as it is (a select built and compiled through the
#: ORM for every batch with a refund cost ~2% of a worker's CPU at everyday rates, py-spy).
_CURRENCIES_SQL = keyed_rows_sql(
    "orders", "order_id", ("tenant_id", "order_id", "currency"), "currency"
)


def _stored_currencies(session: Session, keys: list[tuple[str, str]]) -> Iterable[Any]:
    """``(tenant, order, currency)`` of the stored orders among ``keys`` that have a currency."""
    if dialect_of(session) == "postgresql":
        tenants, orders = [tenant for tenant, _ in keys], [order for _, order in keys]
        return driver_rows(session.connection(), _CURRENCIES_SQL, (tenants, orders))
    found: list[Any] = []
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        found += session.execute(
            select(Order.tenant_id, Order.order_id, Order.currency).where(
                tuple_(Order.tenant_id, Order.order_id).in_(chunk), Order.currency.is_not(None)
            )
        )
    return found

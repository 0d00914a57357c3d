"""Test helpers: build envelopes and parse them as a worker would."""

from __future__ import annotations

import threading
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from analytics.events import Event, parse
from analytics.ingest import BatchResult, Context, apply_events

RECEIVED = datetime(2024, 3, 1, 12, 0, 0)


def make(
    event_type: str,
    data: dict[str, Any],
    timestamp: str = "2024-01-01T10:00:00Z",
    event_id: str | None = None,
    tenant_id: str = "tenant-a",
    user_id: str | None = "user-1",
    **extra: Any,
) -> Event:
    document: dict[str, Any] = {
        "event_type": event_type,
        "tenant_id": tenant_id,
        "timestamp": timestamp,
        "data": data,
        **extra,
    }
    if event_id is not None:
        document["event_id"] = event_id
    if user_id is not None:
        document["user_id"] = user_id
    return to_event(document)


def to_event(document: dict[str, Any], channel: str = "events:test:x") -> Event:
    return parse(orjson.dumps(document), channel=channel, received_at=RECEIVED, max_bytes=1 << 20)


def apply(engine: Engine, events: list[Event], currency: str = "USD") -> BatchResult:
    with Session(engine) as session, session.begin():
        return apply_events(session, events, Context(default_currency=currency))


def apply_beside(
    engine: Engine, first: list[Event], second: list[Event]
) -> tuple[bool, BatchResult]:
    """Apply ``second`` from another thread while the transaction that applied ``first`` is open.

    Returns whether the second waited (a second long) for the first to commit, and its result.
    """
    results: list[BatchResult] = []
    done = threading.Event()

    def other() -> None:
        results.append(apply(engine, second))
        done.set()

    with Session(engine) as session:
        session.begin()
        apply_events(session, first, Context())
        thread = threading.Thread(target=other)
        thread.start()
        waited = not done.wait(1.0)
        session.commit()
    thread.join(30)
    return waited, results[0]


def rows(engine: Engine, *columns: Any, where: Any = None) -> list[tuple[Any, ...]]:
    stmt = select(*columns)
    if where is not None:
        stmt = stmt.where(where)
    with Session(engine) as session:
        return [tuple(row) for row in session.execute(stmt.order_by(columns[0]))]


def assert_seed_aggregates(engine: Engine, tenant_id: str = "test-tenant") -> None:
    """What the seed document's 15 examples (``simulate.seed_examples``) must leave behind.

    The examples share their ids (``"uuid"``) and come one second apart in the
    document's order, from 2024-01-01T00:00:00Z.
    """
    from analytics.events import REGISTRY
    from analytics.models import (
        Alert,
        InventoryLevel,
        InventoryMovement,
        LoginLocation,
        MetricCounter,
        Order,
        Payment,
        ProductSale,
        Refund,
        UserCohort,
        UserSession,
    )

    def at(seconds: int) -> datetime:
        return datetime(2024, 1, 1, 0, 0, seconds)

    mine = MetricCounter.tenant_id == tenant_id
    assert rows(
        engine,
        MetricCounter.dimension,
        MetricCounter.count,
        where=mine & (MetricCounter.metric == "events_by_type"),
    ) == [(name, 1) for name in sorted(REGISTRY)]
    counters = dict(
        ((metric, dimension), (count, total))
        for metric, dimension, count, total in rows(
            engine,
            MetricCounter.metric,
            MetricCounter.dimension,
            MetricCounter.count,
            MetricCounter.total,
            where=mine,
        )
    )
    assert counters[("registrations_by_source", "organic")] == (1, Decimal(0))
    assert counters[("revenue", "USD")] == (1, Decimal("174.99"))
    assert counters[("payments_processed", "USD")] == (1, Decimal("174.99"))
    assert counters[("payments_failed", "insufficient_funds")] == (1, Decimal("174.99"))
    assert counters[("payments_refunded", "customer_request")] == (1, Decimal("174.99"))
    assert counters[("profile_updates", "")] == (1, Decimal(0))
    assert counters[("logouts", "")] == (1, Decimal(3600))
    assert rows(
        engine, UserCohort.user_id, UserCohort.registered_at, UserCohort.referral_source
    ) == [("uuid", at(0), "organic")]
    assert rows(engine, LoginLocation.country, LoginLocation.city, LoginLocation.user_id) == [
        ("US", "San Francisco", "uuid")
    ]
    assert rows(engine, UserSession.ended_at, UserSession.duration_seconds) == [
        (at(2), Decimal(3600))
    ]
    assert rows(
        engine,
        Order.order_id,
        Order.status,
        Order.total_amount,
        Order.currency,
        Order.created_at,
        Order.paid_at,
        Order.cancelled_at,
        Order.fulfilled_at,
    ) == [("uuid", "fulfilled", Decimal("174.99"), "USD", at(4), at(8), at(6), at(7))]
    assert rows(engine, ProductSale.product_id, ProductSale.units, ProductSale.revenue) == [
        ("uuid", 2, Decimal("99.98"))
    ]
    assert rows(
        engine, Payment.payment_id, Payment.status, Payment.amount, Payment.refunded_amount
    ) == [("uuid", "refunded", Decimal("174.99"), Decimal("174.99"))]
    assert rows(engine, Refund.order_id, Refund.amount, Refund.refunded_at) == [
        ("uuid", Decimal("174.99"), at(10))
    ]
    assert rows(
        engine,
        InventoryLevel.sku,
        InventoryLevel.on_hand,
        InventoryLevel.low_stock_events,
        InventoryLevel.out_of_stock_events,
        InventoryLevel.restock_events,
        InventoryLevel.adjustment_events,
    ) == [("PROD-001", 48, 1, 1, 1, 1)]
    assert rows(
        engine,
        InventoryMovement.occurred_at,
        InventoryMovement.kind,
        InventoryMovement.quantity_after,
    ) == [
        (at(11), "low_stock", 5),
        (at(12), "out_of_stock", 0),
        (at(13), "restocked", 105),
        (at(14), "adjusted", 48),
    ]
    assert rows(engine, Alert.created_at, Alert.alert_type, Alert.severity, Alert.resolved_at) == [
        (at(11), "low_stock", "warning", at(13)),
        (at(12), "out_of_stock", "critical", at(13)),
    ]

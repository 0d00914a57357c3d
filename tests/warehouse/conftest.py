"""Fixtures of the warehouse tests: the local BigQuery server, settings pointing at it, events."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from analytics.config import Settings
from analytics.db import session_factory
from analytics.models import StoredEvent
from analytics.warehouse.rows import insert_id
from tests.warehouse.bigquery_server import BigQueryServer, running

DAY = datetime(2026, 12, 1, 9, 0)


@pytest.fixture
def bigquery() -> Iterator[BigQueryServer]:
    """A BigQuery REST server on loopback, stopped after the test."""
    with running() as server:
        yield server


def warehouse_settings(server: BigQueryServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "warehouse": "bigquery",
        "bigquery_project": "test-project",
        "bigquery_dataset": "analytics",
        "bigquery_api_endpoint": server.url,
        "warehouse_batch": 10,
        "warehouse_timeout": 2.0,
        "warehouse_interval": 1.0,
    }
    values.update(overrides)
    return Settings(**values)


def event_row(n: int, tenant: str = "t1", **overrides: Any) -> dict[str, Any]:
    when = DAY + timedelta(minutes=n)
    row = {
        "tenant_id": tenant,
        "event_id": f"e{n}",
        "event_type": "order.created",
        "known": True,
        "user_id": f"u{n % 3}",
        "occurred_at": when,
        "received_at": when,
        "stored_at": when,
        "channel": "events:order:created",
        "payload": {
            "event_type": "order.created",
            "tenant_id": tenant,
            "data": {"order_id": f"o{n}", "total_amount": n},
            "metadata": {"source": "test"},
        },
    }
    row.update(overrides)
    return row


def store_events(engine: Engine, numbers: range | list[int], tenant: str = "t1") -> set[str]:
    """Store events numbered ``numbers`` (one transaction); return their insertIds."""
    rows = [event_row(n, tenant) for n in numbers]
    with session_factory(engine).begin() as session:
        session.execute(insert(StoredEvent), rows)
    return {insert_id(r["event_id"]) for r in rows}


@pytest.fixture
def store(engine: Engine) -> Callable[..., set[str]]:
    """:func:`store_events` into the test's database (PostgreSQL, then SQLite)."""
    return lambda numbers, tenant="t1": store_events(engine, numbers, tenant)

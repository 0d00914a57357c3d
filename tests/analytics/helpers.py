"""Test helpers: build envelopes and parse them as a worker would."""

from __future__ import annotations

from datetime import datetime
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


def rows(engine: Engine, *columns: Any, where: Any = None) -> list[tuple[Any, ...]]:
    stmt = select(*columns)
    if where is not None:
        stmt = stmt.where(where)
    with Session(engine) as session:
        return [tuple(row) for row in session.execute(stmt.order_by(columns[0]))]

"""How far behind each warehouse sink is, and the floor retention must not prune past."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from analytics.config import Settings
from analytics.models import StoredEvent, WarehouseReject, WarehouseSink


def undelivered_floor(session: Session, settings: Settings) -> int | None:
    """The smallest ``events.id`` that may not have reached the warehouse yet (None: no sink).

    Retention must keep every event from this id on. A sink that has not run yet
    has received nothing: the floor is 1. Rows BigQuery refused are behind the
    floor: the sink moved past them, keeping their ids in ``warehouse_rejects``.
    """
    if not settings.warehouse_enabled:
        return None
    delivered = session.scalar(
        select(WarehouseSink.delivered_id).where(WarehouseSink.name == settings.warehouse_sink)
    )
    return int(delivered or 0) + 1


def lag(session: Session, delivered_id: int, now: datetime) -> tuple[int, float]:
    """Events after ``delivered_id``, and the seconds since the first of them was stored."""
    waiting = session.scalar(
        select(func.count()).select_from(StoredEvent).where(StoredEvent.id > delivered_id)
    )
    first = session.execute(
        select(StoredEvent.stored_at, StoredEvent.received_at)
        .where(StoredEvent.id > delivered_id)
        .order_by(StoredEvent.id)
        .limit(1)
    ).first()
    if first is None:
        return int(waiting or 0), 0.0
    since = first.stored_at or first.received_at
    return int(waiting or 0), round(max(0.0, (now - since).total_seconds()), 1)


def status(session: Session, settings: Settings, now: datetime) -> list[dict[str, Any]]:
    """One row per sink (the configured one, and any other that ever ran)."""
    sinks = {row.name: row for row in session.scalars(select(WarehouseSink))}
    names = sorted(set(sinks) | ({settings.warehouse_sink} - {""}))
    rejects = dict(
        session.execute(
            select(WarehouseReject.sink, func.count()).group_by(WarehouseReject.sink)
        ).all()
    )
    rows = []
    for name in names:
        sink = sinks.get(name)
        delivered = sink.delivered_id if sink else 0
        events, seconds = lag(session, delivered, now)
        rows.append(
            {
                "sink": name,
                "configured": name == settings.warehouse_sink,
                "delivered_id": delivered,
                "lag_events": events,
                "lag_seconds": seconds,
                "delivered_at": sink.delivered_at.isoformat()
                if sink and sink.delivered_at
                else None,
                "rows_delivered": sink.rows_delivered if sink else 0,
                "rejected": int(rejects.get(name, 0)),
                "failures": sink.failures if sink else 0,
                "last_error": sink.last_error if sink else None,
            }
        )
    return rows

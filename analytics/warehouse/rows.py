"""What a stored event looks like in the warehouse: the table's schema and the row of one event.

The schema is declared once here and created by the sink when the table is
missing; the SQL files beside this module query it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Text, cast, select

from analytics.models import StoredEvent

#: ``(name, BigQuery type, mode)`` of every column, in order.
SCHEMA: tuple[tuple[str, str, str], ...] = (
    ("event_id", "STRING", "REQUIRED"),
    ("event_type", "STRING", "REQUIRED"),
    ("tenant_id", "STRING", "REQUIRED"),
    ("user_id", "STRING", "NULLABLE"),
    # The event's own time (the envelope's timestamp, UTC): the table's day partitions.
    ("timestamp", "TIMESTAMP", "REQUIRED"),
    ("data", "JSON", "NULLABLE"),
    ("metadata", "JSON", "NULLABLE"),
    # When the pipeline stored it in PostgreSQL.
    ("stored_at", "TIMESTAMP", "NULLABLE"),
)
#: Day partitions on this column; queries that filter on it read only those days.
PARTITION_COLUMN = "timestamp"
#: Rows stored sorted by these within a partition: every dashboard query filters a tenant.
CLUSTER_COLUMNS = ("tenant_id", "event_type")


def insert_id(event_id: str) -> str:
    """BigQuery's ``insertId`` of an event: its ``event_id``, as the contract names it.

    Event ids are unique per tenant only (the ``events`` key is the pair): two tenants
    sending one id within BigQuery's dedup window (about a minute) would lose a row
    there. Producers send UUIDs; the README says so.
    """
    return event_id


@dataclass(frozen=True)
class Outgoing:
    """One stored event on its way: its ``events.id``, its insertId and its row."""

    row_id: int
    tenant_id: str
    event_id: str
    insert_id: str
    row: dict[str, Any]


#: The columns of ``events`` a warehouse row is made of. ``data`` and ``metadata`` come as
#: JSON text straight from the database: decoding and encoding them again in Python
#: took most of the sink's CPU (benchmarks/warehouse.py).
COLUMNS = (
    StoredEvent.id,
    StoredEvent.tenant_id,
    StoredEvent.event_id,
    StoredEvent.event_type,
    StoredEvent.user_id,
    StoredEvent.occurred_at,
    StoredEvent.stored_at,
    cast(StoredEvent.payload["data"], Text).label("data"),
    cast(StoredEvent.payload["metadata"], Text).label("metadata"),
)


def select_events() -> Select:
    """The columns :func:`outgoing` reads, in ``events.id`` order."""
    return select(*COLUMNS).order_by(StoredEvent.id)


def select_after(after: int, up_to: int, limit: int) -> Select:
    """The first ``limit`` events with ``after < id <= up_to``, in ``events.id`` order.

    The ids are chosen first, in a subquery, so that the JSON columns are extracted
    for those rows only: with the range's size misjudged (statistics not yet updated
    after a burst), PostgreSQL otherwise extracted them for the whole range and
    sorted it (measured 100 ms for 15,000 rows, against 3 ms).
    """
    ids = (
        select(StoredEvent.id)
        .where(StoredEvent.id > after, StoredEvent.id <= up_to)
        .order_by(StoredEvent.id)
        .limit(limit)
    )
    return select_events().where(StoredEvent.id.in_(ids.scalar_subquery()))


def _timestamp(value: datetime | None) -> str | None:
    # Naive UTC in the database; BigQuery reads this form as UTC.
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def outgoing(record: Any) -> Outgoing:
    """The warehouse row of one ``events`` row (as :func:`select_events` reads it)."""
    # A JSON column takes its value as JSON text in insertAll.
    row = {
        "event_id": record.event_id,
        "event_type": record.event_type,
        "tenant_id": record.tenant_id,
        "user_id": record.user_id,
        "timestamp": _timestamp(record.occurred_at),
        "data": record.data,
        "metadata": record.metadata,
        "stored_at": _timestamp(record.stored_at),
    }
    return Outgoing(
        row_id=record.id,
        tenant_id=record.tenant_id,
        event_id=record.event_id,
        insert_id=insert_id(record.event_id),
        row=row,
    )

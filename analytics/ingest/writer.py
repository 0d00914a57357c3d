"""The writer: checks a batch's changes against their columns, then applies them at once.

:func:`apply_events` stores a batch's raw events keyed by ``(tenant_id,
event_id)`` and applies the changes of exactly those events whose insert was
new, merging the batch's changes to the same row first and writing each table
with one multi-row ``INSERT ... ON CONFLICT DO UPDATE``. Every update is computed
by the database from the row it holds (``value = value + excluded``,
last-writer-wins by event time), so any number of workers may write at once.
Stock alerts are the exception (:mod:`analytics.ingest.alerts`), and a refund's
currency, looked up from its order (:mod:`analytics.ingest.refunds`).

The changes name their tables; this module is where a name becomes a table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import and_, case, func, or_
from sqlalchemy.orm import Session

from analytics import report_rollups, rollups
from analytics.db import Writes, insert_once
from analytics.errors import InvalidEvent
from analytics.events import Event
from analytics.ingest.alerts import StockKey, apply_stock_alerts
from analytics.ingest.changes import (
    AGGREGATES,
    APPENDED,
    REFUNDS,
    Aggregate,
    Append,
    Change,
    Context,
    Merge,
    Upsert,
)
from analytics.ingest.handlers import changes_for
from analytics.ingest.refunds import resolve_refunds
from analytics.models import Base, EventKey, StoredEvent
from analytics.storable import fit_for, path_of, storable_channel

#: Every table by its name, as changes name them.
TABLES = Base.metadata.tables
# A misspelt table name fails here, at import, not in the first batch that uses it.
_unknown = {a.table for a in AGGREGATES if a.table not in TABLES} | set(APPENDED) - set(TABLES)
if _unknown:  # pragma: no cover - caught at import by every test run
    raise LookupError(f"changes name tables the models do not define: {sorted(_unknown)}")


def plan(event: Event, ctx: Context) -> list[Change]:
    """The changes of one event, or InvalidEvent when a value would not fit its column.

    Checked before anything of the batch is written (``analytics.storable``): a
    value the database cannot hold makes its event a dead letter, not a failed batch.
    """
    fit = fit_for(ctx.event_time_min, ctx.event_time_max)
    why = fit.when_problem(event.timestamp)
    if why is not None:
        raise _refused(event, f"timestamp: {why}")
    changes = changes_for(event, ctx)
    for change in changes:
        if isinstance(change, Upsert):
            misfit = fit.problem(TABLES[change.aggregate.table], change.values)
        elif isinstance(change, Append):
            misfit = fit.problem(TABLES[change.table], change.values)
        else:
            continue
        if misfit is not None:
            field = path_of(misfit.value, event.payload) or "a value derived from the event"
            raise _refused(event, f"{field}: {misfit.why} ({misfit.column})")
    return changes


def _refused(event: Event, why: str) -> InvalidEvent:
    return InvalidEvent(why, tenant_id=event.tenant_id, event_type=event.event_type)


@dataclass(slots=True)
class Planned:
    """An event that passed :func:`plan`, with the changes it makes."""

    event: Event
    changes: list[Change]


# ------------------------------------------------------------------------ writer


def _merge_values(aggregate: Aggregate, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Fold ``new`` into ``old`` exactly as the SQL built by :func:`_set_clause` would."""
    for column, ts_column in aggregate.latest.items():
        new_ts, old_ts = new.get(ts_column), old.get(ts_column)
        if new_ts is not None and (old_ts is None or new_ts >= old_ts):
            old[column] = new.get(column)
    for column, how in aggregate.merge.items():
        a, b = old.get(column), new.get(column)
        if how is Merge.SUM:
            old[column] = (a or 0) + (b or 0)
        elif b is None:
            continue
        elif a is None or how is Merge.LAST:
            old[column] = b
        elif how is Merge.MIN:
            old[column] = min(a, b)
        elif how is Merge.MAX:
            old[column] = max(a, b)


def _set_clause(aggregate: Aggregate, stmt: Any) -> dict[str, Any]:
    table = TABLES[aggregate.table]
    new = stmt.excluded
    clause: dict[str, Any] = {}
    for column, ts_column in aggregate.latest.items():
        newer = and_(
            new[ts_column].is_not(None),
            or_(table.c[ts_column].is_(None), new[ts_column] >= table.c[ts_column]),
        )
        clause[column] = case((newer, new[column]), else_=table.c[column])
    for column, how in aggregate.merge.items():
        old_value, new_value = table.c[column], new[column]
        if how is Merge.SUM:
            clause[column] = old_value + new_value
        elif how is Merge.KEEP:
            clause[column] = func.coalesce(old_value, new_value)
        elif how is Merge.LAST:
            clause[column] = func.coalesce(new_value, old_value)
        else:
            better = new_value < old_value if how is Merge.MIN else new_value > old_value
            clause[column] = case(
                (new_value.is_(None), old_value),
                (or_(old_value.is_(None), better), new_value),
                else_=old_value,
            )
    return clause


def upsert_rows(writes: Writes, aggregate: Aggregate, rows: Iterable[dict[str, Any]]) -> int:
    """Merge rows with equal keys, then write them all with one multi-row upsert.

    The upsert takes the rows in key order (its ``ORDER BY``, on PostgreSQL), so that
    concurrent writers lock rows in the same order and cannot deadlock each other;
    SQLite's writers take turns.
    """
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    columns, sums = aggregate.columns, aggregate.sums_only
    key_of = itemgetter(*aggregate.key) if len(aggregate.key) > 1 else _one_key(aggregate.key[0])
    for row in rows:
        key = key_of(row)
        current = merged.get(key)
        if current is None:
            merged[key] = dict(zip(columns, map(row.get, columns), strict=True))
        elif sums:
            for column in sums:
                current[column] = (current[column] or 0) + (row.get(column) or 0)
        else:
            _merge_values(aggregate, current, row)
    if not merged:
        return 0
    zeroed = [column for column, how in aggregate.merge.items() if how is Merge.SUM]
    if zeroed:
        for values in merged.values():
            for column in zeroed:
                if values[column] is None:
                    values[column] = 0
    merged_rows = list(merged.values())

    def build(insert: Callable[[Any], Any]) -> Any:
        stmt = insert(TABLES[aggregate.table])
        if aggregate.presence:
            # The row is there or it is not: no new row version when it is.
            return stmt.on_conflict_do_nothing(index_elements=list(aggregate.key))
        return stmt.on_conflict_do_update(
            index_elements=list(aggregate.key),
            set_=_set_clause(aggregate, stmt),
        )

    writes.upsert(aggregate, build, merged_rows, order_by=aggregate.key)
    return len(merged_rows)


def _one_key(name: str) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    return lambda row: (row[name],)


@dataclass
class BatchResult:
    """What one batch did: events new, already stored, and refused (a value did not fit)."""

    stored: int = 0
    duplicates: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    refused: list[tuple[Event, InvalidEvent]] = field(default_factory=list)


def store_raw(session: Session, batch: Sequence[Event]) -> list[Event]:
    """Insert the batch's raw events; return the ones that were not stored before.

    An event is new unless its ``(tenant_id, event_id)`` was stored before, under any
    time (an id-less, timestamp-less payload forwarded by two bridges; a producer that
    re-stamps a retry): :func:`analytics.db.insert_once` claims the key in
    ``event_keys`` first and stores only the events whose key it claimed.
    """
    unique: dict[tuple[str, str], Event] = {}
    for event in batch:
        unique.setdefault((event.tenant_id, event.event_id), event)
    if not unique:
        return []
    stored_at = datetime.now(UTC).replace(tzinfo=None)
    rows = [
        {
            "tenant_id": e.tenant_id,
            "event_id": e.event_id,
            "event_type": e.event_type,
            "known": e.known,
            "user_id": e.user_id,
            "occurred_at": e.timestamp,
            "received_at": e.received_at,
            "stored_at": stored_at,
            "channel": storable_channel(e.channel),
            "response_time_ms": e.response_time_ms,
            "event_id_derived": e.event_id_derived,
            "timestamp_derived": e.timestamp_derived,
            "payload": e.payload,
        }
        for e in unique.values()
    ]
    table, keys = StoredEvent.__table__, EventKey.__table__
    inserted = insert_once(session, table, keys, rows)  # type: ignore[arg-type]
    return [event for key, event in unique.items() if key in inserted]


def apply_events(session: Session, batch: Sequence[Event], ctx: Context) -> BatchResult:
    """Store a batch and apply the changes of its new events, inside the caller's transaction.

    Events :func:`plan` refuses are neither stored nor applied: they are returned in
    ``refused`` for the caller to keep as dead letters.
    """
    planned: list[Planned] = []
    refused: list[tuple[Event, InvalidEvent]] = []
    for event in batch:
        try:
            planned.append(Planned(event, plan(event, ctx)))
        except InvalidEvent as exc:
            refused.append((event, exc))
    result = apply_planned(session, planned)
    result.refused = refused
    return result


def apply_planned(session: Session, batch: Sequence[Planned]) -> BatchResult:
    """Store planned events and apply the changes of those that were new."""
    first: dict[tuple[str, str], Planned] = {}
    for item in batch:
        first.setdefault((item.event.tenant_id, item.event.event_id), item)
    new_events = store_raw(session, [item.event for item in first.values()])
    result = BatchResult(stored=len(new_events), duplicates=len(batch) - len(new_events))
    for event in new_events:
        result.by_type[event.event_type] = result.by_type.get(event.event_type, 0) + 1
    fresh = {(event.tenant_id, event.event_id) for event in new_events}
    changes = [change for key, item in first.items() if key in fresh for change in item.changes]
    # Days other than the events' own whose rollups these changes alter: where orders and
    # users were counted before an earlier time moves them, and the days of paid orders.
    watched = report_rollups.watched(changes)
    dirty = {(e.tenant_id, e.day) for e in new_events} | report_rollups.days_before(
        session, watched
    )
    # The aggregates and the dirty days go together: one round trip on PostgreSQL.
    writes = Writes(session)
    write_changes(session, changes, writes)
    if watched.paid:
        # The paid orders' days are read after their rows are written (sent with what is
        # held), so that an order.created another worker committed meanwhile is seen (the
        # upsert waited for its row); then every dirty day is marked in one statement, in
        # key order, as concurrent writers must lock those rows.
        dirty |= report_rollups.days_after(session, watched, writes)
    rollups.mark_dirty(session, dirty, writes)
    writes.send()
    return result


def apply_changes(
    session: Session,
    events: Sequence[Event],
    ctx: Context,
    keep: Callable[[Event, Change], bool] | None = None,
) -> None:
    """Apply what ``events`` change (only the changes ``keep`` accepts, when given)."""
    write_changes(
        session,
        (
            change
            for event in events
            for change in changes_for(event, ctx)
            if keep is None or keep(event, change)
        ),
    )


def write_changes(
    session: Session, changes: Iterable[Change], writes: Writes | None = None
) -> None:
    """Write changes: each table's rows merged and upserted at once; stock alerts recomputed.

    With ``writes``, the writes are left held in it for the caller to send, except those
    the stock alerts' recompute reads, which go with its read.
    """
    upserts: dict[Aggregate, list[dict[str, Any]]] = {}
    appends: dict[str, list[dict[str, Any]]] = {}
    stock_keys: dict[StockKey, datetime] = {}  # each key's earliest movement in the batch
    for change in changes:
        if isinstance(change, Upsert):
            upserts.setdefault(change.aggregate, []).append(change.values)
        elif isinstance(change, Append):
            appends.setdefault(change.table, []).append(change.values)
        else:
            key = (change.tenant_id, change.product_id, change.location_id)
            first = stock_keys.get(key)
            if first is None or change.occurred_at < first:
                stock_keys[key] = change.occurred_at
    if REFUNDS in appends:
        resolve_refunds(session, appends[REFUNDS], upserts)
    held = writes if writes is not None else Writes(session)
    for aggregate in AGGREGATES:
        if aggregate in upserts:
            upsert_rows(held, aggregate, upserts[aggregate])
    for name, rows in appends.items():
        held.insert(TABLES[name], rows)
    # Its read of the movements goes after the held writes that append them (with them, on
    # PostgreSQL); the alerts it changes are held in turn.
    apply_stock_alerts(session, stock_keys, held)
    if writes is None:
        held.send()

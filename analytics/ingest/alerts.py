"""Stock alerts: recomputed from the stored movements of each product and location a batch touched.

Events of one product travel in different batches, in any order, so no batch can
tell from its own events which alerts open or close. The writer hands the keys a
batch touched to :func:`apply_stock_alerts`, which derives each key's alerts from
its movements since the last restock before the batch's (:func:`stock_alert_history`)
and writes only the difference from what is stored.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple, TypeAlias, cast

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Table,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    union_all,
    update,
)
from sqlalchemy.orm import Session

from analytics.db import Unnest, Writes, dialect_of, statement
from analytics.ingest.changes import RESTOCKED, STOCK_ALERTS, alert_key, stock_alert_message
from analytics.models import Alert, InventoryMovement

#: The columns of a stock alert that its movements determine.
STOCK_ALERT_COLUMNS = (
    "alert_type",
    "severity",
    "message",
    "created_at",
    "resolved_at",
    "product_id",
    "location_id",
)
StockKey: TypeAlias = tuple[str, str, str]
#: What the recompute reads of a movement: its key and what :func:`stock_alert_history` uses.
MOVEMENT_COLUMNS = (
    "tenant_id",
    "product_id",
    "location_id",
    "kind",
    "occurred_at",
    "event_id",
    "alert_message",
    "quantity_after",
)
#: The movements that open or resolve a stock alert.
ALERT_MOVEMENTS = (RESTOCKED, *STOCK_ALERTS)
#: What the recompute reads of a stored alert: its row, identity and computed columns.
_STORED_ALERT_COLUMNS = ("id", "tenant_id", "alert_key", "event_id", *STOCK_ALERT_COLUMNS)


def stock_alert_history(key: StockKey, movements: Iterable[Any]) -> list[dict[str, Any]]:
    """The stock alerts of a product at a location, computed from its movements alone.

    ``movements`` (any order) have ``kind``, ``occurred_at``, ``event_id``,
    ``alert_message`` and ``quantity_after``. They are walked in event time,
    ``low_stock``/``out_of_stock`` before a ``restocked`` of the same instant (a
    restock resolves the alerts raised at or before it), then by event id: each
    ``low_stock`` or ``out_of_stock`` opens an alert of its type unless one is
    open, and each ``restocked`` resolves every open alert. Nothing here depends on
    how the events were batched or in which order they arrived.
    """
    tenant_id, product_id, location_id = key
    alerts: list[dict[str, Any]] = []
    open_: dict[str, dict[str, Any]] = {}
    for move in sorted(movements, key=lambda m: (m.occurred_at, m.kind == RESTOCKED, m.event_id)):
        if move.kind == RESTOCKED:
            for alert in open_.values():
                alert["resolved_at"] = move.occurred_at
            open_.clear()
        elif move.kind in STOCK_ALERTS and move.kind not in open_:
            message = move.alert_message
            if message is None:  # stored before movements kept their alert's message
                message = stock_alert_message(
                    move.kind, None, product_id, location_id, move.quantity_after
                )
            open_[move.kind] = {
                "tenant_id": tenant_id,
                "alert_key": alert_key(move.kind, product_id, location_id),
                "alert_type": move.kind,
                "severity": STOCK_ALERTS[move.kind],
                "message": message,
                "created_at": move.occurred_at,
                "resolved_at": None,
                "event_id": move.event_id,
                "product_id": product_id,
                "location_id": location_id,
            }
            alerts.append(open_[move.kind])
    return alerts


def apply_stock_alerts(
    session: Session, keys: Mapping[StockKey, datetime], writes: Writes | None = None
) -> None:
    """Recompute the stock alerts of these ``(tenant, product, location)`` from their movements.

    Events of one product travel in different batches, so a batch cannot tell
    which alerts its events open or close: it recomputes each touched key's
    alerts (:func:`stock_alert_history`) and changes only the rows that differ,
    so unchanged alerts keep their ids.

    Only from the key's last restock before the batch's earliest movement of it
    (its time in ``keys``): every alert opened up to that restock's instant is
    resolved by it (a restock comes after the alerts of its own instant), so after
    that instant nothing is open, and the batch's movements, all later, cannot
    change what came before. So a recompute reads the movements and alerts since
    that restock, not the product's whole history, and costs the same in the tenth
    year as in the first. A key with no restock before is recomputed whole.

    One lock per key makes concurrent recomputations of a key run in turn, the
    later one reading (at read committed) the movements the earlier one committed;
    without it two batches would each miss the other's movements. The caller has
    already appended this batch's movements, or holds them in ``writes``.

    With ``writes`` (PostgreSQL), what it holds, the locks and the reads go in one round
    trip, and the alerts' changes are left held there, for the caller to send.
    """
    ordered = sorted(keys)
    if not ordered:
        return
    held = writes if writes is not None else Writes(session)
    postgresql = dialect_of(session) == "postgresql"
    if postgresql:
        held.lock(*(f"stock_alerts:{t}:{p}@{loc}" for t, p, loc in ordered))
        movements, stored = _read_windows_postgresql(held, ordered, keys)
    else:  # SQLite holds no writes (they ran), and its write transactions take turns: no lock
        movements, stored = _read_windows(session, ordered, keys)
    history: dict[StockKey, list[Any]] = {key: [] for key in ordered}
    for row in movements:
        history[row.tenant_id, row.product_id, row.location_id].append(row)
    wanted: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    for key, moves in history.items():
        for alert in stock_alert_history(key, moves):
            wanted[alert["tenant_id"], alert["alert_key"], alert["event_id"]] = alert
    stale: list[int] = []
    closed: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    kept: set[tuple[str, str, str | None]] = set()
    for row in stored:
        ident = (row.tenant_id, row.alert_key, row.event_id)
        want = wanted.get(ident)
        if want is None or ident in kept:
            stale.append(row.id)
            continue
        kept.add(ident)
        if any(getattr(row, name) != want[name] for name in STOCK_ALERT_COLUMNS):
            values = {name: want[name] for name in STOCK_ALERT_COLUMNS}
            (others if want["resolved_at"] is None else closed).append(
                {"alert_id": row.id, **values}
            )
    # One open alert per key (a unique index): rows go first, then alerts that close,
    # then the one that stays open, then new alerts; no step has two open at once.
    new = [alert for ident, alert in wanted.items() if ident not in kept]
    if postgresql:
        if stale:
            held.text(_DELETE_SQL, (stale,))
        for rows in (closed, others):
            if rows:
                sql, unnest = statement(session, "stock-alert-updates", lambda _: _updates(session))
                held.text(sql, unnest.params([{"id": row["alert_id"], **row} for row in rows]))
        held.insert(_ALERTS, new)
    else:
        if stale:
            session.execute(delete(_ALERTS).where(_ALERTS.c.id.in_(stale)))
        for rows in (closed, others):
            if rows:
                session.execute(update(_ALERTS).where(_ALERTS.c.id == bindparam("alert_id")), rows)
        if new:
            session.execute(insert(_ALERTS), new)
    if writes is None:
        held.send()


def _read_windows(
    session: Session, ordered: list[StockKey], firsts: Mapping[StockKey, datetime]
) -> tuple[list[Any], list[Any]]:
    """The keys' movements and stock alerts since their windows' starts (any dialect)."""
    movements: list[Any] = []
    stored: list[Any] = []
    for start in range(0, len(ordered), WINDOWS_A_STATEMENT):
        chunk = ordered[start : start + WINDOWS_A_STATEMENT]
        params: dict[str, Any] = {}
        for n, (tenant_id, product_id, location_id) in enumerate(chunk):
            params[f"t{n}"] = tenant_id
            params[f"p{n}"] = product_id
            params[f"l{n}"] = location_id
            params[f"f{n}"] = firsts[tenant_id, product_id, location_id]
            for kind in STOCK_ALERTS:
                params[f"{kind}{n}"] = alert_key(kind, product_id, location_id)
        read_moves, read_alerts = _window_reads(len(chunk))
        movements.extend(session.execute(read_moves, params))
        stored.extend(session.execute(read_alerts, params))
    return movements, stored


# PostgreSQL: each key's window start, its last restock before the batch's first movement
# of it (``first``), read once, by the index on (tenant, product, location, time) backwards;
# then the movements and the stock alerts since, each a read of the key's own index range
# (OFFSET 0 keeps a lateral read from being pulled up into a join the planner might hash).
# One statement, so that it can go in the round trip that sends the batch's writes: its
# rows are movements and alerts in one shape, told apart by the first column.
_WINDOWS_SQL = f"""WITH k AS MATERIALIZED (
    SELECT u.*, coalesce((
        SELECT r.occurred_at FROM inventory_movements r
        WHERE r.tenant_id = u.tenant_id AND r.product_id = u.product_id
          AND r.location_id = u.location_id AND r.kind = '{RESTOCKED}'
          AND r.occurred_at < u.first
        ORDER BY r.occurred_at DESC LIMIT 1), '-infinity') AS since
    FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamp[], %s::text[], %s::text[])
        AS u(tenant_id, product_id, location_id, first, low, out))
SELECT false, m.tenant_id, m.product_id, m.location_id, m.kind, m.occurred_at, m.event_id,
    m.alert_message, m.quantity_after, NULL::bigint, NULL::text, NULL::text, NULL::timestamp
FROM k CROSS JOIN LATERAL (
    SELECT * FROM inventory_movements m
    WHERE m.tenant_id = k.tenant_id AND m.product_id = k.product_id
      AND m.location_id = k.location_id AND m.occurred_at > k.since
      AND m.kind IN ({", ".join(f"'{kind}'" for kind in ALERT_MOVEMENTS)})
    OFFSET 0) m
UNION ALL
SELECT true, a.tenant_id, a.product_id, a.location_id, a.alert_type, a.created_at, a.event_id,
    a.message, NULL, a.id, a.alert_key, a.severity, a.resolved_at
FROM k CROSS JOIN LATERAL (
    SELECT * FROM alerts a
    WHERE a.tenant_id = k.tenant_id AND a.alert_key IN (k.low, k.out) AND a.created_at > k.since
    OFFSET 0) a"""


class _Movement(NamedTuple):
    """A movement :data:`_WINDOWS_SQL` read (:data:`MOVEMENT_COLUMNS`)."""

    tenant_id: str
    product_id: str
    location_id: str
    kind: str
    occurred_at: datetime
    event_id: str
    alert_message: str | None
    quantity_after: int | None


class _StoredAlert(NamedTuple):
    """A stock alert :data:`_WINDOWS_SQL` read (:data:`_STORED_ALERT_COLUMNS`)."""

    id: int
    tenant_id: str
    alert_key: str
    event_id: str | None
    alert_type: str
    severity: str
    message: str
    created_at: datetime
    resolved_at: datetime | None
    product_id: str | None
    location_id: str | None


assert _Movement._fields == MOVEMENT_COLUMNS and _StoredAlert._fields == _STORED_ALERT_COLUMNS
_DELETE_SQL = "DELETE FROM alerts WHERE id = ANY(%s::bigint[])"
#: The columns of a stock alert :func:`_updates` sets, by its id.
_UPDATED = ("id", *STOCK_ALERT_COLUMNS)


def _read_windows_postgresql(
    writes: Writes, ordered: list[StockKey], firsts: Mapping[StockKey, datetime]
) -> tuple[list[Any], list[Any]]:
    """The same reads as :func:`_read_windows`, as one statement of one text whatever the
    number of keys (the keys as arrays), sent after what ``writes`` holds, in its round
    trip: a ``UNION ALL`` of 30 keys took PostgreSQL ~1.5 ms to plan, each time; this
    plans in a fraction of that."""
    low, out = STOCK_ALERTS
    params = (
        [key[0] for key in ordered],
        [key[1] for key in ordered],
        [key[2] for key in ordered],
        [firsts[key] for key in ordered],
        [alert_key(low, key[1], key[2]) for key in ordered],
        [alert_key(out, key[1], key[2]) for key in ordered],
    )
    movements: list[Any] = []
    stored: list[Any] = []
    for is_alert, *row in writes.send((_WINDOWS_SQL, params)):
        if not is_alert:
            movements.append(_Movement._make(row[:8]))
            continue
        tenant, product, location, kind, at, event_id, message, _, ident, key, severity, end = row
        stored.append(
            _StoredAlert(
                id=ident,
                tenant_id=tenant,
                alert_key=key,
                event_id=event_id,
                alert_type=kind,
                severity=severity,
                message=message,
                created_at=at,
                resolved_at=end,
                product_id=product,
                location_id=location,
            )
        )
    return movements, stored


def _updates(session: Session) -> tuple[str, Unnest]:
    """PostgreSQL: the update of stock alerts by id, its rows as arrays (:class:`Unnest`)."""
    unnest = Unnest.of(session, _ALERTS, _UPDATED, "u")
    assignments = ", ".join(f"{name} = u.{name}" for name in STOCK_ALERT_COLUMNS)
    return f"UPDATE alerts AS a SET {assignments} FROM {unnest.source} WHERE a.id = u.id", unnest


#: Before every movement: the start of a key's window when it has no restock before.
DAWN = datetime(1, 1, 1)
#: Keys whose windows one statement reads (a statement is built once for each count).
WINDOWS_A_STATEMENT = 32
_MOVES = cast(Table, InventoryMovement.__table__)
_ALERTS = cast(Table, Alert.__table__)


@functools.cache
def _window_reads(count: int) -> tuple[CompoundSelect, CompoundSelect]:
    """The reads of ``count`` keys' movements and stock alerts since their windows' starts.

    Parameters ``t{n}``, ``p{n}``, ``l{n}`` name key ``n``, ``f{n}`` is its first
    movement in the batch, and ``low_stock{n}`` and ``out_of_stock{n}`` its alert keys.
    A ``UNION ALL`` of a read a key, each an index range: PostgreSQL plans an ``OR`` of
    the keys as one scan of what they share, the tenant's whole history. Built once a
    count: building the expressions cost more than running them.
    """
    moves, alerts = [], []
    for n in range(count):
        since = _last_restock_before(n)
        moves.append(
            select(*(_MOVES.c[name] for name in MOVEMENT_COLUMNS)).where(
                _MOVES.c.tenant_id == bindparam(f"t{n}"),
                _MOVES.c.product_id == bindparam(f"p{n}"),
                _MOVES.c.location_id == bindparam(f"l{n}"),
                _MOVES.c.occurred_at > since,
                _MOVES.c.kind.in_(ALERT_MOVEMENTS),
            )
        )
        alerts.append(
            select(*(_ALERTS.c[name] for name in _STORED_ALERT_COLUMNS)).where(
                _ALERTS.c.tenant_id == bindparam(f"t{n}"),
                _ALERTS.c.alert_key.in_([bindparam(f"{kind}{n}") for kind in STOCK_ALERTS]),
                _ALERTS.c.created_at > since,
            )
        )
    return union_all(*moves), union_all(*alerts)


def _last_restock_before(n: int) -> ColumnElement[datetime]:
    """Key ``n``'s last restock before its ``f{n}`` (:data:`DAWN` if none), in SQL.

    Read by the index on ``(tenant_id, product_id, location_id, occurred_at)``
    backwards from ``f{n}``: a few rows for a product restocked now and then.
    """
    restock = _MOVES.alias("restock")  # its own FROM, not correlated with the movements read
    last = (
        select(restock.c.occurred_at)
        .where(
            restock.c.tenant_id == bindparam(f"t{n}"),
            restock.c.product_id == bindparam(f"p{n}"),
            restock.c.location_id == bindparam(f"l{n}"),
            restock.c.kind == RESTOCKED,
            restock.c.occurred_at < bindparam(f"f{n}"),
        )
        .order_by(restock.c.occurred_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    return func.coalesce(last, literal(DAWN, _MOVES.c.occurred_at.type))

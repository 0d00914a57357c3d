"""Stock alerts: recomputed from the stored movements of each product and location a batch touched.

Events of one product travel in different batches, in any order, so no batch can
tell from its own events which alerts open or close. The writer hands the keys a
batch touched to :func:`apply_stock_alerts`, which derives each key's alerts from
its whole movement history (:func:`stock_alert_history`) and writes only the
difference from what is stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeAlias, cast

from sqlalchemy import Table, bindparam, delete, insert, select, tuple_, update
from sqlalchemy.orm import Session

from analytics.db import one_at_a_time
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


def apply_stock_alerts(session: Session, keys: Iterable[StockKey]) -> None:
    """Recompute the stock alerts of these ``(tenant, product, location)`` from their movements.

    Events of one product travel in different batches (a task per event type), so
    a batch cannot tell which alerts its events open or close: it recomputes each
    touched key's whole history (:func:`stock_alert_history`) and changes only the
    rows that differ, so unchanged alerts keep their ids. One lock per key makes
    concurrent recomputations of a key run in turn, the later one reading (at read
    committed) the movements the earlier one committed; without it two batches
    would each miss the other's movements. The caller has already appended this
    batch's movements.
    """
    ordered = sorted(set(keys))
    if not ordered:
        return
    one_at_a_time(session, *(f"stock_alerts:{t}:{p}@{loc}" for t, p, loc in ordered))
    move = InventoryMovement
    history: dict[StockKey, list[Any]] = {key: [] for key in ordered}
    for row in session.execute(
        select(
            move.tenant_id,
            move.product_id,
            move.location_id,
            move.kind,
            move.occurred_at,
            move.event_id,
            move.alert_message,
            move.quantity_after,
        ).where(
            tuple_(move.tenant_id, move.product_id, move.location_id).in_(ordered),
            move.kind.in_((RESTOCKED, *STOCK_ALERTS)),
        )
    ):
        history[row.tenant_id, row.product_id, row.location_id].append(row)
    wanted: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    for key, movements in history.items():
        for alert in stock_alert_history(key, movements):
            wanted[alert["tenant_id"], alert["alert_key"], alert["event_id"]] = alert
    table = cast(Table, Alert.__table__)
    stored = session.execute(
        select(table.c.id, table.c.tenant_id, table.c.alert_key, table.c.event_id)
        .add_columns(*(table.c[name] for name in STOCK_ALERT_COLUMNS))
        .where(
            tuple_(table.c.tenant_id, table.c.alert_key).in_(
                [(t, alert_key(kind, p, loc)) for t, p, loc in ordered for kind in STOCK_ALERTS]
            )
        )
    ).all()
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
    if stale:
        session.execute(delete(table).where(table.c.id.in_(stale)))
    for rows in (closed, others):
        if rows:
            session.execute(update(table).where(table.c.id == bindparam("alert_id")), rows)
    new = [alert for ident, alert in wanted.items() if ident not in kept]
    if new:
        session.execute(insert(table), new)

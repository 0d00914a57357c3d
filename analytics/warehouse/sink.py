"""The sink: copies stored events to the warehouse in ``events.id`` order, exactly once by insertId.

One run (a Celery task on the ``warehouse`` queue, started by beat every
``WAREHOUSE_INTERVAL`` seconds) does:

1. Take the sink's lease (a row in ``warehouse_sinks``): one run sends at a time,
   and a run that was killed is replaced when its lease runs out. A sink that
   failed recently waits for its backoff (1, 2, 4 ... ``WAREHOUSE_MAX_BACKOFF``
   seconds) to pass.
2. Move the safe id (:mod:`analytics.warehouse.fence`) and read up to
   ``WAREHOUSE_BATCH`` events after ``delivered_id`` and not after the safe id.
3. Send them with their insertIds, up to ``WAREHOUSE_CONCURRENCY`` batches at once
   (no transaction is open meanwhile).
4. Only once BigQuery accepted them, commit ``delivered_id`` = the last id of the
   leading batches it accepted, with the rows it refused (``insertErrors``) kept in
   ``warehouse_rejects``, and read the next batches in the same transaction.

A crash between 3 and 4 (the worker killed, the connection dropped after BigQuery
took the rows) sends the same rows again with the same insertIds, which BigQuery
drops as duplicates; nothing is ever skipped, since the mark moves only past rows
BigQuery answered for. A failed request, or rows with a transient per-row error,
move nothing: the batch is sent again after the backoff.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from analytics.config import Settings
from analytics.db import insert_for
from analytics.errors import WarehouseError
from analytics.models import WarehouseReject, WarehouseSink
from analytics.warehouse import fence
from analytics.warehouse.bigquery import InsertResult
from analytics.warehouse.rows import Outgoing, outgoing, select_after

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """Naive UTC, as the database keeps times."""
    return datetime.now(UTC).replace(tzinfo=None)


class Destination(Protocol):
    """Where batches go (:class:`analytics.warehouse.bigquery.BigQueryTable`)."""

    def insert(self, batch: Sequence[Outgoing]) -> InsertResult: ...


@dataclass
class Run:
    """What one run did. ``state``: drained, budget (stopped with more to send),
    busy (another run holds the lease), backoff (waiting after failures), failed, lost."""

    state: str
    sent: int = 0
    rejected: int = 0
    batches: int = 0
    error: str | None = None


def backoff(failures: int, maximum: float) -> float:
    """Seconds to wait after ``failures`` consecutive failures: 1, 2, 4 ... up to ``maximum``."""
    return float(min(maximum, 2.0 ** max(0, failures - 1)))


def lease_seconds(settings: Settings) -> float:
    """How long a run's lease lasts from its last batch: longer than one request can take."""
    return 2 * settings.warehouse_timeout + settings.warehouse_interval


def _sink_row(session: Session, name: str) -> WarehouseSink:
    """The sink's row, created when missing, locked until the transaction ends."""
    session.execute(
        insert_for(session)(WarehouseSink)
        .values(name=name, delivered_id=0, safe_id=0, failures=0, rows_delivered=0)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    row = session.get(WarehouseSink, name, with_for_update=True, populate_existing=True)
    assert row is not None
    return row


def _claim(session: Session, name: str, owner: str, now: datetime, lease: float) -> str | None:
    """Take the lease; the reason why not (busy, backoff) when it cannot be taken."""
    sink = _sink_row(session, name)
    if sink.retry_at is not None and sink.retry_at > now:
        return "backoff"
    if sink.lease_owner is not None and sink.lease_until is not None and sink.lease_until > now:
        return "busy"
    sink.lease_owner, sink.lease_until = owner, now + timedelta(seconds=lease)
    return None


def _next_batches(
    session: Session, name: str, owner: str, size: int, count: int
) -> list[list[Outgoing]] | None:
    """Up to ``count`` batches of the next events, after moving the safe id; None when the
    lease was lost."""
    sink = _sink_row(session, name)
    if sink.lease_owner != owner:
        return None
    safe = fence.advance(session, sink)
    rows = [
        outgoing(r) for r in session.execute(select_after(sink.delivered_id, safe, size * count))
    ]
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def _send(destination: Destination, batch: Sequence[Outgoing]) -> InsertResult | WarehouseError:
    try:
        return destination.insert(batch)
    except WarehouseError as exc:
        return exc


def _mine(name: str, owner: str) -> Any:
    return update(WarehouseSink).where(
        WarehouseSink.name == name, WarehouseSink.lease_owner == owner
    )


def keep_rejects(
    session: Session, sink: str, batch: Sequence[Outgoing], result: InsertResult, now: datetime
) -> int:
    """Store the rows BigQuery refused; a row refused again (a backfill) is kept once."""
    rows = [
        {
            "sink": sink,
            "event_row_id": batch[index].row_id,
            "tenant_id": batch[index].tenant_id,
            "event_id": batch[index].event_id,
            "reason": reason[:64],
            "message": message,
            "rejected_at": now,
        }
        for index, (reason, message) in sorted(result.rejected.items())
    ]
    if rows:
        session.execute(
            insert_for(session)(WarehouseReject).on_conflict_do_nothing(
                index_elements=["sink", "event_row_id"]
            ),
            rows,
        )
    return len(rows)


def _room(run: Run, parallel: int, max_batches: int | None) -> int:
    """How many batches the next round may send."""
    if max_batches is None:
        return parallel
    return max(1, min(parallel, max_batches - run.batches))


def _record(
    session: Session,
    name: str,
    owner: str,
    done: list[tuple[list[Outgoing], InsertResult]],
    at: datetime,
    lease: float,
    run: Run,
) -> bool:
    """Move the mark past batches BigQuery accepted, keep what it refused; False: the lease
    was lost (another run took over after it ran out and sends these rows again, with the
    same insertIds)."""
    rows = sum(len(batch) for batch, _ in done)
    moved = session.execute(
        _mine(name, owner).values(
            delivered_id=done[-1][0][-1].row_id,
            delivered_at=at,
            rows_delivered=WarehouseSink.rows_delivered + rows,
            failures=0,
            retry_at=None,
            last_error=None,
            lease_until=at + timedelta(seconds=lease),
        )
    )
    if moved.rowcount == 0:  # type: ignore[attr-defined]
        return False
    for batch, result in done:
        run.rejected += keep_rejects(session, name, batch, result, at)
        run.sent += len(batch) - len(result.rejected)
        run.batches += 1
    return True


def _fail(
    sessions: sessionmaker[Session], settings: Settings, owner: str, why: str, now: datetime
) -> None:
    name = settings.warehouse_sink
    with sessions.begin() as session:
        sink = _sink_row(session, name)
        if sink.lease_owner != owner:
            return
        sink.failures += 1
        wait = backoff(sink.failures, settings.warehouse_max_backoff)
        sink.retry_at = now + timedelta(seconds=wait)
        sink.last_error = why
        sink.lease_owner = sink.lease_until = None
    log.warning("warehouse %s: %s; next attempt in %gs", name, why, wait)


def deliver(
    sessions: sessionmaker[Session],
    settings: Settings,
    destination: Destination,
    *,
    now: Clock = utcnow,
    budget: float = 60.0,
    max_batches: int | None = None,
) -> Run:
    """One run of the sink: send batches until nothing is left, ``budget`` seconds have
    passed or ``max_batches`` were sent; stop at the first failure."""
    name, owner = settings.warehouse_sink, uuid.uuid4().hex
    lease = lease_seconds(settings)
    with sessions.begin() as session:
        refused = _claim(session, name, owner, now(), lease)
    if refused is not None:
        return Run(refused)
    run = Run("drained")
    started = time.monotonic()
    size, parallel = settings.warehouse_batch, settings.warehouse_concurrency
    pool = ThreadPoolExecutor(parallel, thread_name_prefix="warehouse") if parallel > 1 else None
    try:
        with sessions.begin() as session:
            batches = _next_batches(session, name, owner, size, _room(run, parallel, max_batches))
        while True:
            if batches is None:
                run.state = "lost"
                return run
            if not batches:
                return run
            # Up to WAREHOUSE_CONCURRENCY requests at once; the mark then moves past the
            # leading batches BigQuery answered for, and stops at the first that failed.
            if pool is None:
                results = [_send(destination, batches[0])]
            else:
                results = list(pool.map(lambda b: _send(destination, b), batches))
            done: list[tuple[list[Outgoing], InsertResult]] = []
            failure = None
            for batch, result in zip(batches, results, strict=True):
                if isinstance(result, WarehouseError):
                    failure = str(result)
                elif result.retry:
                    failure = f"{len(result.retry)} of {len(batch)} rows failed transiently"
                else:
                    done.append((batch, result))
                    continue
                break
            at = now()
            # One transaction records the batches and reads the next ones.
            with sessions.begin() as session:
                if done and not _record(session, name, owner, done, at, lease, run):
                    run.state = "lost"
                    return run
                if failure is not None:
                    run.state, run.error = "failed", failure
                    break
                if (max_batches is not None and run.batches >= max_batches) or (
                    time.monotonic() - started > budget
                ):
                    run.state = "budget"
                    return run
                batches = _next_batches(
                    session, name, owner, size, _room(run, parallel, max_batches)
                )
        _fail(sessions, settings, owner, run.error or "", now())
        return run
    finally:
        if pool is not None:
            pool.shutdown(wait=False)
        if run.state not in ("failed", "lost"):
            with sessions.begin() as session:
                session.execute(_mine(name, owner).values(lease_owner=None, lease_until=None))

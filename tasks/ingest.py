"""Ingestion tasks: one per event type, a catch-all for unknown types, and the dead-letter recorder.

Each task is thin: decode the batch, open one transaction, call the domain, and
decide on retry. A batch message is a list of ``[channel, payload, received_at]``
items (``received_at`` in epoch seconds); dead-letter items carry the payload in
base64 and the bridge's error as a fourth element.
"""

from __future__ import annotations

import base64
import logging
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from celery import Task
from celery.exceptions import Retry
from celery.signals import worker_process_init

from analytics.config import get_settings
from analytics.db import dispose_engines, get_engine, is_transient, session_factory
from analytics.errors import InvalidEvent
from analytics.events import Event, parse
from analytics.ingest import BatchResult, Context, Rejected, apply_events, record_dead_letters
from tasks.app import app
from tasks.ledger import Ledger, ledger_url
from tasks.queues import DEADLETTER_TASK, INGEST_ROUTES, UNKNOWN_EVENT_TASK

log = logging.getLogger(__name__)
#: Seconds to wait before the n-th retry of a batch whose database is unavailable.
BACKOFF_CAP = 30


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Connections inherited from the parent process must not be shared.
    dispose_engines()


def backoff(retries: int) -> int:
    return int(min(2**retries, BACKOFF_CAP))


def _received_at(value: Any) -> datetime:
    return datetime.fromtimestamp(float(value), UTC).replace(tzinfo=None)


def decode_batch(items: Sequence[Sequence[Any]]) -> tuple[list[Event], list[Rejected]]:
    """Validate every item of a batch; the invalid ones become dead letters, never retries."""
    settings = get_settings()
    events: list[Event] = []
    rejected: list[Rejected] = []
    # The bridge stamps everything it read at once with one time.
    times: dict[Any, datetime] = {}
    for item in items:
        channel, payload = str(item[0]), item[1]
        received = times.get(item[2])
        if received is None:
            received = times[item[2]] = _received_at(item[2])
        try:
            events.append(
                parse(
                    payload,
                    channel=channel,
                    received_at=received,
                    max_bytes=settings.max_payload_bytes,
                    max_depth=settings.max_json_depth,
                    pii_salt=settings.pii_salt,
                )
            )
        except InvalidEvent as exc:
            raw = payload.encode() if isinstance(payload, str) else bytes(payload)
            rejected.append(Rejected.of(channel, raw, received, exc))
    return events, rejected


def _apply_one_by_one(events: list[Event], ctx: Context) -> tuple[BatchResult, list[Rejected]]:
    """After an unexpected error, apply events alone so one bad event cannot sink the rest."""
    total = BatchResult()
    failed: list[Rejected] = []
    sessions = session_factory(get_engine())
    for event in events:
        try:
            with sessions.begin() as session:
                result = apply_events(session, [event], ctx)
        except Exception as exc:
            if is_transient(exc):
                raise
            log.exception("event %s of type %s failed to apply", event.event_id, event.event_type)
            detail = "".join(traceback.format_exception_only(exc)).strip()
            failed.append(
                Rejected(
                    event.channel,
                    _event_bytes(event),
                    event.received_at,
                    f"handler error: {detail}",
                    tenant_id=event.tenant_id,
                    event_type=event.event_type,
                )
            )
            continue
        total.stored += result.stored
        total.duplicates += result.duplicates
    return total, failed


def _event_bytes(event: Event) -> bytes:
    return orjson.dumps(event.payload)


def ingest(task: Task, items: Sequence[Sequence[Any]]) -> dict[str, int]:
    """Validate, store and aggregate one batch in one transaction."""
    settings = get_settings()
    ctx = Context.from_settings(settings)
    events, rejected = decode_batch(items)
    sessions = session_factory(get_engine())
    try:
        try:
            with sessions.begin() as session:
                result = apply_events(session, events, ctx)
                record_dead_letters(session, rejected, settings.pii_salt)
        except Exception as exc:
            if is_transient(exc):
                raise
            log.exception("batch of %d failed; applying its events one by one", len(events))
            result, failed = _apply_one_by_one(events, ctx)
            with sessions.begin() as session:
                record_dead_letters(session, rejected + failed, settings.pii_salt)
            rejected += failed
    except Exception as exc:
        if not is_transient(exc):
            raise
        countdown = backoff(task.request.retries)
        log.warning(
            "database unavailable (%s); batch of %d retried in %ds (retry %d of %s)",
            type(exc).__name__,
            len(items),
            countdown,
            task.request.retries + 1,
            task.max_retries,
        )
        raise task.retry(exc=exc, countdown=countdown) from None
    return {"stored": result.stored, "duplicates": result.duplicates, "dead_letters": len(rejected)}


def record(task: Task, items: Sequence[Sequence[Any]]) -> dict[str, int]:
    """Store what the bridge rejected, with its exact bytes and the bridge's reason."""
    rejected = [
        Rejected(str(channel), base64.b64decode(raw), _received_at(received), str(error))
        for channel, raw, received, error in items
    ]
    try:
        with session_factory(get_engine()).begin() as session:
            record_dead_letters(session, rejected, get_settings().pii_salt)
    except Exception as exc:
        if not is_transient(exc):
            raise
        raise task.retry(exc=exc, countdown=backoff(task.request.retries)) from None
    return {"dead_letters": len(rejected)}


_ledger: Ledger | None = None


def _done(task_id: str | None) -> None:
    """Strike a finished batch from the delivery ledger, so the bridge never re-sends it."""
    global _ledger
    if not task_id:
        return
    try:
        if _ledger is None:
            settings = get_settings()
            _ledger = Ledger(ledger_url(settings.celery_broker_url, settings.redis_url))
        _ledger.done(task_id)
    except Exception as exc:  # the batch may be re-sent: it will count once
        log.warning("could not strike batch %s from the delivery ledger (%s)", task_id, exc)


def _register(name: str, body: Any) -> Task:
    def run(self: Task, items: Sequence[Sequence[Any]]) -> dict[str, int]:
        try:
            result = body(self, items)
        except Retry:
            raise
        except Exception as exc:
            # A batch that failed for good is not re-sent; one that ran out of
            # retries while the database was away stays in the ledger for later.
            if not is_transient(exc):
                _done(self.request.id)
            raise
        _done(self.request.id)
        return result

    run.__name__ = run.__qualname__ = name.replace(".", "_")
    run.__doc__ = body.__doc__
    return app.task(
        name=name,
        bind=True,
        queue=INGEST_ROUTES[name],
        acks_late=True,
        reject_on_worker_lost=True,
        max_retries=get_settings().task_max_retries,
        ignore_result=True,
    )(run)


#: Task name -> task, every ingestion task the workers run.
TASKS: dict[str, Task] = {
    name: _register(name, record if name == DEADLETTER_TASK else ingest) for name in INGEST_ROUTES
}
assert UNKNOWN_EVENT_TASK in TASKS

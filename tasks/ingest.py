"""Ingestion tasks: one per event type, one mixed per category and one across categories
(``events.mixed``), a catch-all for unknown types, and the dead-letter recorder.

Each task is thin: decode the batch, open one transaction, call the domain, and
decide on retry. A batch message is a list of items, :class:`analytics.batch.EventItem`
for the event tasks and :class:`analytics.batch.RejectedItem` (at most
``DEAD_LETTER_KEEP_BYTES`` of the message, the bridge's reason, the whole message's
size and SHA-256) for the dead-letter task, packed by the bridge into one item
(``analytics.batch.pack``) that the task unpacks; their wire format is in analytics.batch.
A batch with an item this worker cannot read (:class:`~analytics.batch.UnsupportedItem`,
a newer bridge) fails whole, so that the bridge sends it again later.

No batch is struck off the delivery ledger unless every item in it ended stored,
a duplicate or a dead letter: a failure that is the environment's is retried with
backoff, and a batch out of retries is sent again by the bridge.
"""

from __future__ import annotations

import collections
import logging
import time
import traceback
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from celery import Task
from celery.exceptions import Retry
from celery.signals import worker_process_init

from analytics.batch import EventItem, RejectedItem, UnsupportedItem, received_at, unpack
from analytics.config import get_settings
from analytics.db import dispose_engines, get_engine, is_retryable, session_factory
from analytics.deadletters import Rejected, record_dead_letters
from analytics.errors import InvalidEvent
from analytics.events import Event, parse
from analytics.ingest import BatchResult, Context, Planned, apply_planned, plan
from tasks import metrics
from tasks.app import app
from tasks.ledger import Ledger, is_redis_url
from tasks.queues import DEADLETTER_TASK, INGEST_ROUTES, MIXED_TASK_NAMES, UNKNOWN_EVENT_TASK

log = logging.getLogger(__name__)
#: Seconds to wait before the n-th retry of a batch whose database is unavailable.
BACKOFF_CAP = 30


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Connections inherited from the parent process must not be shared.
    dispose_engines()


def backoff(retries: int) -> int:
    return int(min(2**retries, BACKOFF_CAP))


def decode_batch(
    items: Sequence[Sequence[Any]], ctx: Context
) -> tuple[list[Planned], list[Rejected]]:
    """Validate and plan every item of a batch; the invalid ones become dead letters.

    An item is invalid when it does not parse, or when a value it would write does
    not fit its column (``analytics.ingest.plan``): either way it is kept with its
    exact bytes and the reason, never retried.
    """
    settings = get_settings()
    decoded = [EventItem.decode(item) for item in items]  # all, before anything is planned
    planned: list[Planned] = []
    rejected: list[Rejected] = []
    # The bridge stamps everything it read at once with one time.
    times: dict[Any, datetime] = {}
    for item in decoded:
        channel, payload = item.channel, item.text
        received = times.get(item.received)
        if received is None:
            received = times[item.received] = received_at(item.received)
        try:
            event = parse(
                payload,
                channel=channel,
                received_at=received,
                max_bytes=settings.max_payload_bytes,
                max_depth=settings.max_json_depth,
                pii_salt=settings.pii_salt,
            )
            planned.append(Planned(event, plan(event, ctx)))
        except InvalidEvent as exc:
            raw = payload.encode() if isinstance(payload, str) else bytes(payload)
            rejected.append(Rejected.of(channel, raw, received, exc))
    return planned, rejected


def _apply_one_by_one(planned: list[Planned]) -> tuple[BatchResult, list[Rejected]]:
    """After an error that is the data's, apply events alone so one cannot sink the rest.

    An event that fails alone becomes a dead letter with the error; an error that
    is the environment's (``is_retryable``) is raised, and the batch comes back.
    """
    total = BatchResult()
    failed: list[Rejected] = []
    sessions = session_factory(get_engine())
    for item in planned:
        event = item.event
        try:
            with sessions.begin() as session:
                result = apply_planned(session, [item])
        except Exception as exc:
            if is_retryable(exc):
                raise
            log.exception("event %s of type %s failed to apply", event.event_id, event.event_type)
            detail = "".join(traceback.format_exception_only(exc)).strip()
            failed.append(
                Rejected(
                    event.channel,
                    _event_bytes(event),
                    event.received_at,
                    f"could not be written: {detail}",
                    tenant_id=event.tenant_id,
                    event_type=event.event_type,
                )
            )
            continue
        total.stored += result.stored
        total.duplicates += result.duplicates
        for event_type, stored in result.by_type.items():
            total.by_type[event_type] = total.by_type.get(event_type, 0) + stored
    return total, failed


def _event_bytes(event: Event) -> bytes:
    return orjson.dumps(event.payload)


def _retry(task: Task, exc: Exception, size: int) -> Retry:
    """Schedule the batch again with backoff: the environment, not the batch, failed."""
    countdown = backoff(task.request.retries)
    log.warning(
        "batch of %d could not be stored now (%s: %s); retried in %ds (retry %d of %s)",
        size,
        type(exc).__name__,
        str(exc).splitlines()[0] if str(exc) else "",
        countdown,
        task.request.retries + 1,
        task.max_retries,
    )
    return task.retry(exc=exc, countdown=countdown)


def ingest(task: Task, items: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """Validate, store and aggregate one batch in one transaction.

    Every item ends stored, a duplicate, or a dead letter; if that cannot be made
    true now (database away, schema not migrated, disk full) the batch is retried.
    """
    return _ingest(task, items, by_type=False)


def ingest_mixed(task: Task, items: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """Validate, store and aggregate one batch of several event types (of one category, or
    of several for ``events.mixed``) in one transaction; the result says what became of
    each type's events (``by_type``:
    ``{"order.created": {"stored": 3, "duplicates": 0, "dead_letters": 1}, ...}``).

    Each item is parsed for its own type, as in any batch: a mixed batch is applied
    exactly as its per-type batches would be, in one transaction instead of several.
    """
    return _ingest(task, items, by_type=True)


def _ingest(task: Task, items: Sequence[Sequence[Any]], by_type: bool) -> dict[str, Any]:
    settings = get_settings()
    ctx = Context.from_settings(settings)
    planned, rejected = decode_batch(items, ctx)
    kinds = (
        collections.Counter(item.event.event_type for item in planned)
        + collections.Counter(letter.event_type or "?" for letter in rejected)
        if by_type
        else None
    )
    bounds = (settings.max_payload_bytes, settings.dead_letter_keep_bytes)
    sessions = session_factory(get_engine())
    try:
        try:
            with sessions.begin() as session:
                result = apply_planned(session, planned)
                record_dead_letters(session, rejected, settings.pii_salt, *bounds)
        except Exception as exc:
            if is_retryable(exc):
                raise
            log.exception("batch of %d failed; applying its events one by one", len(planned))
            result, failed = _apply_one_by_one(planned)
            with sessions.begin() as session:
                record_dead_letters(session, rejected + failed, settings.pii_salt, *bounds)
            rejected += failed
    except Exception as exc:
        raise _retry(task, exc, len(items)) from None
    counts: dict[str, Any] = {
        "stored": result.stored,
        "duplicates": result.duplicates,
        "dead_letters": len(rejected),
    }
    if kinds is not None:
        counts["by_type"] = outcomes_by_type(kinds, result.by_type, rejected)
    return counts


def outcomes_by_type(
    items: collections.Counter[str], stored: dict[str, int], rejected: list[Rejected]
) -> dict[str, dict[str, int]]:
    """What became of each type's ``items``: stored, duplicates, dead letters.

    Every item ends as one of the three, so duplicates are what is neither stored
    nor a dead letter. A dead letter with no type it could tell counts under "?".
    """
    letters = collections.Counter(letter.event_type or "?" for letter in rejected)
    return {
        event_type: {
            "stored": stored.get(event_type, 0),
            "duplicates": count - stored.get(event_type, 0) - letters[event_type],
            "dead_letters": letters[event_type],
        }
        for event_type, count in sorted(items.items())
    }


def record(task: Task, items: Sequence[Sequence[Any]]) -> dict[str, int]:
    """Store what the bridge rejected, with its bytes (bounded when oversized) and its reason.

    Each item is a :class:`~analytics.batch.RejectedItem`.
    """
    rejected = [
        Rejected(
            item.channel,
            item.head,
            received_at(item.received),
            item.reason,
            size=item.size,
            sha256=item.sha256,
        )
        for item in map(RejectedItem.decode, items)
    ]
    settings = get_settings()
    try:
        with session_factory(get_engine()).begin() as session:
            record_dead_letters(
                session,
                rejected,
                settings.pii_salt,
                settings.max_payload_bytes,
                settings.dead_letter_keep_bytes,
            )
    except Exception as exc:
        raise _retry(task, exc, len(items)) from None
    return {"dead_letters": len(rejected)}


_ledger: Ledger | None = None


def _done(task_id: str | None) -> None:
    """Strike a finished batch from the delivery ledger, so the bridge never re-sends it."""
    global _ledger
    if not task_id:
        return
    try:
        if _ledger is None:
            broker_url = get_settings().celery_broker_url
            if not is_redis_url(broker_url):
                return  # only a Redis broker has a ledger (tasks.sender)
            _ledger = Ledger(broker_url)
        _ledger.done(task_id)
    except Exception as exc:  # the batch may be re-sent: it will count once
        log.warning("could not strike batch %s from the delivery ledger (%s)", task_id, exc)


def _register(name: str, body: Any) -> Task:
    def run(self: Task, items: Sequence[Any]) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            # A packed batch (analytics.batch, version 2) is unpacked here, in the pool.
            items = unpack(items)
            result = body(self, items)
        except Retry:
            raise
        except UnsupportedItem as exc:
            # Written by a newer bridge, or broken: retrying here cannot help. The batch
            # stays in the delivery ledger, and the bridge sends it again later.
            log.error(
                "batch %s cannot be read by this worker (%s); nothing of it was written, "
                "the bridge will send it again: upgrade the workers before the bridges",
                self.request.id,
                exc,
            )
            raise
        except Exception:
            # Out of retries: the batch stays in the delivery ledger, and the bridge
            # sends it again later. Nothing is struck off that was not stored.
            log.error("batch %s ran out of retries; the bridge will send it again", self.request.id)
            raise
        _done(self.request.id)
        try:
            metrics.record_batch(name, items, result, started)
        except Exception as exc:  # a metric must never fail a stored batch
            log.warning("could not record the metrics of batch %s (%s)", self.request.id, exc)
        return result

    run.__name__ = run.__qualname__ = name.replace(".", "_")
    run.__doc__ = body.__doc__
    return app.task(
        name=name,
        bind=True,
        # No queue here: task_routes (tasks.app) says where each task goes; Celery
        # deprecates the task's queue attribute and warns on every direct call.
        acks_late=True,
        reject_on_worker_lost=True,
        max_retries=get_settings().task_max_retries,
        ignore_result=True,
    )(run)


#: Task name -> task, every ingestion task the workers run.
def _body(name: str) -> Any:
    if name == DEADLETTER_TASK:
        return record
    return ingest_mixed if name in MIXED_TASK_NAMES else ingest


TASKS: dict[str, Task] = {name: _register(name, _body(name)) for name in INGEST_ROUTES}
assert UNKNOWN_EVENT_TASK in TASKS

"""The bridge's `send`: hands batches to the Celery app by task name, each recorded in the
delivery ledger first (on a Redis broker), and re-sends the ledger's overdue batches.

It lives with the tasks, not in the bridge: the bridge only receives a callable
``send(task, queue, items)`` (built here by the `analytics bridge` command), so that it
imports neither the Celery app nor the ledger.
"""

from __future__ import annotations

import collections
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from analytics.batch import EventItem, UnsupportedItem, pack, unpack
from analytics.config import Settings, get_settings
from analytics.errors import InvalidEvent
from analytics.events import event_type_of
from tasks.ledger import Ledger, is_redis_url
from tasks.queues import MIXED_TASK_NAMES
from tasks.serializer import BATCH_SERIALIZER

log = logging.getLogger("bridge")


class CelerySender:
    """Hands batches to the Celery app by task name, each recorded in the delivery ledger first.

    :meth:`sweep` re-sends the ledger's overdue batches (see :mod:`tasks.ledger`).
    """

    def __init__(self, app: Any = None, settings: Settings | None = None):
        # Imported here: a sender given its own app (tests, benchmarks) never builds the default.
        from tasks.app import BATCH_COMPRESSION
        from tasks.app import app as default_app

        self.compression = BATCH_COMPRESSION
        self.app = app or default_app
        settings = settings or get_settings()
        self.resend_after = settings.ledger_resend_after
        #: The ledger makes up for kombu's Redis transport, which can lose a batch a worker
        #: took; RabbitMQ redelivers whatever a lost consumer had not acknowledged, and
        #: its queues are not lists in Redis, so there is no ledger (and no held batch).
        self.ledger = (
            Ledger(settings.celery_broker_url) if is_redis_url(settings.celery_broker_url) else None
        )

    def __call__(
        self,
        task: str,
        queue: str,
        items: list[list[Any]],
        *,
        by_type: dict[str, int] | None = None,
    ) -> None:
        task_id = str(uuid.uuid4())
        # Packed once (analytics.batch): the ledger keeps what the message carries.
        packed = pack(items)
        if self.ledger is not None:
            self.ledger.record(task_id, task, queue, packed)
        self._send(task_id, task, queue, packed, argsrepr(task, items, by_type))

    def _send(self, task_id: str, task: str, queue: str, items: list[Any], shown: str) -> None:
        # argsrepr (``shown``) is what logs, Flower and `celery inspect` show of a task's
        # arguments; by default the first 1 KB of the events, e-mail addresses and
        # all, computed on every send.
        self.app.send_task(
            task,
            args=[items],
            queue=queue,
            task_id=task_id,
            argsrepr=shown,
            compression=self.compression,
            serializer=BATCH_SERIALIZER,
            # Nobody reads a batch's result: without this, Celery's Redis result backend
            # SUBSCRIBEs to the task's result channel on every send (and UNSUBSCRIBEs later),
            # two commands and a round trip a task.
            ignore_result=True,
        )

    def backlog(self, queues: list[str]) -> dict[str, int]:
        """Messages waiting in each queue that no worker has taken yet."""
        if self.ledger is None:
            return {}
        return self.ledger.waiting(queues)

    def sweep(self) -> int:
        """Re-send the batches no worker finished in time; how many were re-sent."""
        if self.ledger is None:
            return 0
        overdue = self.ledger.overdue(self.resend_after)
        for task_id, task, queue, items in overdue:
            try:
                events = unpack(items)
            except UnsupportedItem:
                # Re-sent as it is all the same: the worker that refuses it says why, and
                # the batches claimed after it in this sweep are not held up by it.
                events = items
            log.warning(
                "re-sending batch %s of %d events to %s: not done %.0fs after it was sent "
                "and its queue is empty (lost by a worker)",
                task_id,
                len(events),
                task,
                self.resend_after,
            )
            self._send(task_id, task, queue, items, argsrepr(task, events))
        return len(overdue)


def argsrepr(task: str, items: Sequence[Any], by_type: dict[str, int] | None = None) -> str:
    """What Flower and the logs show of a batch: its size, and for a mixed batch the events
    of each type: ``[<12 events: order.created=3, order.updated=9>]``.

    A mixed batch re-sent from the ledger comes without ``by_type``: its items are
    read again for their type (rare, and a few microseconds an event).
    """
    if by_type is None and task in MIXED_TASK_NAMES:
        by_type = dict(collections.Counter(event_type_of_item(item) for item in items))
    if not by_type:
        return f"[<{len(items)} events>]"
    kinds = ", ".join(f"{name}={count}" for name, count in sorted(by_type.items()))
    return f"[<{len(items)} events: {kinds}>]"


def event_type_of_item(item: list[Any]) -> str:
    """The event type an item's text names ("?" when it names none it can tell)."""
    try:
        document = orjson.loads(EventItem.decode(item).text)
        return event_type_of(document) if isinstance(document, dict) else "?"
    except (orjson.JSONDecodeError, UnsupportedItem, InvalidEvent):
        return "?"

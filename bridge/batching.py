"""Grouping by task and sending: how the sender turns what was read into Celery batches.

Messages are grouped by the task they go to, and each group is sent when it holds
``batch_size`` events, or when its oldest event has waited: ``flush_ms`` once the
group holds ``fill_events`` (a busy stream), else the hold (a quiet stream waits
longer to fill its batch: a task's CPU is mostly fixed, so at everyday rates small
tasks cost most of the pipeline's CPU). The hold is ``hold_budget_ms`` for a
trickle and shorter the busier the stream (:class:`ArrivalRate`): each event a batch
is expected to carry takes ``hold_event_us`` off the budget, the time its task will
take to store it, so that publish -> commit stays within the budget at any rate. An
event after a quiet spell goes out at once, and a burst goes out in large batches.
A due batch of fewer than ``fill_events`` does not go alone when other groups are
under-filled too: they go together, as one message, with the count of each type.
Groups of its own category come first; a message of one category goes to that
category's mixed task (``order.mixed``, named with the others in tasks/queues.py), one
that also took other categories' groups (``mix_categories``) to ``events.mixed``, on
the queue of the category with most events in it. A task's fixed cost is what
dominates at everyday rates, when every one of the 15 types is under-filled; busy
types keep their own tasks on their own queue.
While the workers are behind (messages wait in the group's queue), a partial batch
waits longer, up to ``max_hold_ms``: a task's cost is mostly fixed, so fewer and
larger tasks are how the workers catch up. A batch that Celery does not take is
tried again until it does: a broker outage must not lose what was read. Once sent,
the source is told (acknowledged), and the bytes are no longer held.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from analytics.batch import EventItem
from analytics.config import Settings
from analytics.errors import InvalidEvent
from analytics.events import CATEGORIES, category_of
from bridge import metrics
from bridge.holding import MESSAGE_OVERHEAD, Holding, megabytes
from bridge.routing import dead_letter_item, route
from bridge.spool import Message
from tasks.queues import DEADLETTER_QUEUE, DEADLETTER_TASK, EVENTS_MIXED_TASK, MIXED_TASKS

log = logging.getLogger("bridge")


class Send(Protocol):
    """Hands one batch to Celery: ``send(task_name, queue, items)``; a mixed batch
    (several event types) comes with ``by_type``, the events of each."""

    def __call__(
        self,
        task: str,
        queue: str,
        items: list[list[Any]],
        *,
        by_type: dict[str, int] | None = None,
    ) -> None: ...


#: What the source is told about the receipts of a batch: sent, or let go.
ReceiptHook = Callable[[list[Any]], None]


@dataclass
class Group:
    """Events waiting for the same task, with what each one weighs and how to acknowledge it."""

    queue: str
    items: list[list[Any]] = field(default_factory=list)
    #: Bytes each item holds in the buffer (kept in step with ``items``).
    sizes: list[int] = field(default_factory=list)
    #: What the source needs back for each item once it is sent: None for pub/sub, a
    #: ``bridge.streams.Receipt`` for a stream entry.
    receipts: list[Any] = field(default_factory=list)
    since: float = 0.0
    #: Not sent before this (monotonic), because its queue had a backlog.
    held_until: float = 0.0

    def due(self, flush_after: float, budget: float, fill: int) -> float:
        """When the group goes: at ``flush_after`` once it holds ``fill`` events, else at
        ``budget`` (or later, while ``held_until`` says its queue has a backlog)."""
        wait = flush_after if len(self.items) >= fill else budget
        return max(self.since + wait, self.held_until)


class ArrivalRate:
    """Events read a second lately: a moving average that forgets with a time constant
    of ``window`` seconds, updated at most every ``step`` seconds."""

    def __init__(self, window: float = 1.0, step: float = 0.05):
        self.window, self.step = window, step
        self.value = 0.0
        self._count = 0
        self._at = time.monotonic()

    def add(self, count: int, now: float) -> float:
        """Count ``count`` events read at ``now`` (monotonic); the rate as it stands."""
        self._count += count
        elapsed = now - self._at
        if elapsed >= self.step:
            weight = 1.0 - math.exp(-elapsed / self.window)
            self.value += weight * (self._count / elapsed - self.value)
            self._count, self._at = 0, now
        return self.value


@dataclass
class Counts:
    """What the bridge did since the last log line."""

    forwarded: collections.Counter[str] = field(default_factory=collections.Counter)
    dead_letters: int = 0
    batches: int = 0
    #: Of those, the messages that carried several event types.
    mixed: int = 0
    #: Partial batches held past the flush time because their queue had a backlog.
    held: int = 0


class Batcher:
    """The sender's groups: routes messages into them and hands them to Celery when due.

    ``acknowledge`` and ``release`` tell the source about a batch's receipts once it
    was handed over, or let go unsent (``durable`` sources only, while ``stopping``:
    they stay pending in Redis for another bridge).
    """

    def __init__(
        self,
        settings: Settings,
        send: Send,
        held: Holding,
        *,
        durable: bool,
        stopping: threading.Event,
        acknowledge: ReceiptHook,
        release: ReceiptHook,
    ):
        self.settings = settings
        self.send = send
        self._held = held
        self.durable = durable
        self._stopping = stopping
        self._acknowledge = acknowledge
        self._release = release
        self.prefix = settings.channel_prefix
        self.batch_size = settings.bridge_batch_size
        self.flush_after = settings.bridge_flush_ms / 1000.0
        self.budget = max(settings.bridge_hold_budget_ms / 1000.0, self.flush_after)
        self.fill = settings.bridge_fill_events
        #: Seconds of hold each event a second takes off the budget.
        self.hold_per_rate = settings.bridge_hold_event_us / 1e6
        #: The hold of an under-filled group now: the budget, less for a busier stream.
        self.hold = self.budget
        self.rate = ArrivalRate()
        self.mix_types = settings.bridge_mix_types
        self.mix_categories = settings.bridge_mix_categories
        self.max_hold = max(settings.bridge_max_hold_ms / 1000.0, self.flush_after)
        #: Queues seen with messages waiting, and when they were looked at.
        self._busy: frozenset[str] = frozenset()
        self._busy_at = -1e9
        self.groups: dict[str, Group] = {}
        self._counts = Counts()
        self.totals = Counts()
        self._last_received = 0.0

    def next_due(self) -> float | None:
        """When the first group is due (monotonic); None when there is no group."""
        if not self.groups:
            return None
        return min(self._due(group) for group in self.groups.values())

    def pending(self) -> int:
        """Events grouped and not sent yet."""
        return sum(len(group.items) for group in list(self.groups.values()))

    def group(self, messages: Iterable[Message]) -> None:
        groups, now, wall = self.groups, time.monotonic(), time.time()
        max_bytes, max_depth = self.settings.max_payload_bytes, self.settings.max_json_depth
        bound_tenants = self.settings.tenant_from_channel
        # Counted here, once per call and category (the metric, not each message).
        read: dict[str, int] = {}
        for raw_channel, data, received, receipt in messages:
            channel = raw_channel.decode("utf-8", "replace")
            if "\x00" in channel:  # no text column can hold it; like bad UTF-8, replaced
                channel = channel.replace("\x00", "\ufffd")
            try:
                if receipt is not None and receipt.problem:
                    raise InvalidEvent(receipt.problem)
                task, queue, text = route(
                    channel, data, self.prefix, max_bytes, max_depth, bound_tenants
                )
                item = EventItem(channel, text, received).encode()
                category = queue
            except InvalidEvent as exc:
                task, queue = DEADLETTER_TASK, DEADLETTER_QUEUE
                item = dead_letter_item(channel, data, received, str(exc), self.settings)
                log.info("dead letter from %s: %s", channel, exc)
                category = self.category(channel)
            read[category] = read.get(category, 0) + 1
            group = groups.get(task)
            if group is None:
                # After a quiet spell, an event goes out at once (its group is due):
                # waiting to fill a batch only pays while events keep coming. Not while
                # another batch is pending: it goes with that one (the reader, waiting
                # for that batch's due time, may have read it late).
                quiet = not groups and received - self._last_received >= self.flush_after
                # Its hold began when its first event was read, not when the sender,
                # busy or asleep until another group's due time, took it in.
                arrived = now - min(max(wall - received, 0.0), self.budget)
                group = groups[task] = Group(queue=queue, since=arrived - quiet * self.budget)
            group.items.append(item)
            group.sizes.append(len(raw_channel) + len(data) + MESSAGE_OVERHEAD)
            group.receipts.append(receipt)
            self._last_received = received
        for category, count in read.items():
            metrics.MESSAGES_READ.labels(category).inc(count)
        if self.hold_per_rate:
            rate = self.rate.add(sum(read.values()), now)
            self.hold = max(self.flush_after, self.budget / (1 + self.hold_per_rate * rate))

    def category(self, channel: str) -> str:
        """The ``category`` label of a rejected message: its channel's, when it is known."""
        category = category_of(channel, self.prefix)
        return category if category in CATEGORIES else metrics.OTHER_CATEGORY

    def flush(self, force: bool) -> None:
        now = time.monotonic()
        groups = self.groups
        for task in list(groups):
            group = groups[task]
            while len(group.items) >= self.batch_size:
                self._send(task, [(group, self.batch_size)])
            if group.items and (force or now >= self._due(group)):
                if not force and self._hold_back(group, now):
                    continue
                self._send_due(task, group)
        # Last: a group merged into another's message may be one the loop went past.
        for task in [task for task, group in groups.items() if not group.items]:
            del groups[task]

    def _send_due(self, task: str, group: Group) -> None:
        """Send a due group: alone, or, when it is under-filled, in one message with the
        other under-filled groups: its category's first (its ``<category>.mixed`` task),
        then, with ``mix_categories``, the other categories' (``events.mixed``).

        Only batches that would go out small are merged: a group holding ``fill``
        events (a busy stream) goes alone to its event type's task, as the contract
        says, and so does an under-filled group with no partner. Unknown types and
        dead letters are never merged.
        """
        mixed = MIXED_TASKS.get(group.queue) if self.mix_types else None
        if mixed is None or len(group.items) >= self.fill:
            self._send(task, [(group, len(group.items))])
            return
        parts = [(group, len(group.items))]
        by_type = {task: len(group.items)}
        room = self.batch_size - len(group.items)
        # Another category's group only with mixing on, and not one held back for its
        # queue's backlog (as last seen): it waits for its own workers, who are behind,
        # and must not take this one along.
        partners = [
            (other_task, other)
            for other_task, other in self.groups.items()
            if other is not group
            and other.queue in MIXED_TASKS
            and 0 < len(other.items) < self.fill
            and (
                other.queue == group.queue
                or (self.mix_categories and other.queue not in self._busy)
            )
        ]
        # Its own category first (sorted is stable).
        partners.sort(key=lambda partner: partner[1].queue != group.queue)
        for other_task, other in partners:
            count = len(other.items)
            if count <= room:
                parts.append((other, count))
                by_type[other_task] = count
                room -= count
        if len(parts) == 1:
            self._send(task, parts)
            return
        per_queue: collections.Counter[str] = collections.Counter()
        for part, count in parts:
            per_queue[part.queue] += count
        if len(per_queue) == 1:
            self._send(mixed, parts, by_type)
            return
        # The queue of the category with most events in it (the due group's on a tie):
        # the pool an operator sized for that traffic.
        queue = max(per_queue, key=lambda q: (per_queue[q], q == group.queue))
        self._send(EVENTS_MIXED_TASK, parts, by_type, queue=queue)

    def _due(self, group: Group) -> float:
        return group.due(self.flush_after, self.hold, self.fill)

    def _hold_back(self, group: Group, now: float) -> bool:
        """Whether a due partial batch should wait for more events: its queue has a backlog."""
        limit = group.since + self.max_hold
        if now >= limit or group.queue not in self._busy_queues(now):
            return False
        group.held_until = min(limit, now + self.flush_after)
        self._counts.held += 1
        self.totals.held += 1
        return True

    def _busy_queues(self, now: float) -> frozenset[str]:
        """The queues with messages no worker has taken yet, looked up at most every flush/2."""
        backlog = getattr(self.send, "backlog", None)
        if backlog is None or self.max_hold <= self.flush_after:
            return frozenset()
        if now - self._busy_at >= self.flush_after / 2:
            self._busy_at = now
            queues = {group.queue for group in self.groups.values()}
            try:
                self._busy = frozenset(
                    q for q, waiting in backlog(sorted(queues)).items() if waiting
                )
            except Exception as exc:  # the broker away: send as if idle (send will retry)
                log.debug("could not read the queues' backlog (%s)", exc)
                self._busy = frozenset()
        return self._busy

    def _send(
        self,
        task: str,
        parts: list[tuple[Group, int]],
        by_type: dict[str, int] | None = None,
        *,
        queue: str | None = None,
    ) -> None:
        """Hand the first ``count`` items of each ``(group, count)`` of ``parts`` to Celery as
        one message, on ``queue`` (by default the first group's), then acknowledge them.

        ``by_type`` (events of each type) is given for a mixed message, and passed on.
        """
        queue = queue or parts[0][0].queue
        items = [item for group, count in parts for item in group.items[:count]]
        count = len(items)
        handed_over = True
        while True:
            try:
                if by_type is None:
                    self.send(task, queue, items)
                else:
                    self.send(task, queue, items, by_type=by_type)
                break
            except Exception as exc:
                if self.durable and self._stopping.is_set():
                    # Unacknowledged, they stay pending in Redis for the next bridge.
                    log.warning(
                        "could not hand %d events to %s (%s) while stopping: leaving them "
                        "unacknowledged for another bridge to claim",
                        count,
                        task,
                        exc,
                    )
                    handed_over = False
                    break
                # Keep the batch: a broker outage must not lose what was read.
                log.error("could not hand %d events to %s (%s); retrying", count, task, exc)
                time.sleep(0.5)
        receipts: list[Any] = []
        size = 0
        now = time.monotonic()
        # Counted by the category each event came from, whatever queue carried it.
        forwarded: collections.Counter[str] = collections.Counter()
        for group, n in parts:
            forwarded[group.queue] += n
            receipts += group.receipts[:n]
            size += sum(group.sizes[:n])
            del group.items[:n], group.sizes[:n], group.receipts[:n]
            group.since = now
            group.held_until = 0.0
        self._held.let_go(size)
        if handed_over:
            self._acknowledge(receipts)
        else:
            self._release(receipts)
            return
        for counts in (self._counts, self.totals):
            counts.batches += 1
            counts.mixed += by_type is not None
            if task == DEADLETTER_TASK:
                counts.dead_letters += count
            else:
                counts.forwarded.update(forwarded)
        metrics.BATCHES_SENT.labels(queue).inc()
        if task == DEADLETTER_TASK:
            # Rare: each rejected item's channel is looked at again for its category.
            for category, n in collections.Counter(
                self.category(item[0]) for item in items
            ).items():
                metrics.MESSAGES_DEAD_LETTERED.labels(category).inc(n)
        else:
            for category, n in forwarded.items():
                metrics.MESSAGES_FORWARDED.labels(category).inc(n)

    def sweep_ledger(self) -> None:
        """Re-send what workers lost (a ``send`` with a delivery ledger has ``sweep``)."""
        sweep = getattr(self.send, "sweep", None)
        if sweep is None:
            return
        try:
            sweep()
        except Exception as exc:  # Redis away: the next sweep tries again
            log.warning("could not sweep the delivery ledger (%s)", exc)

    def log_counts(self, final: bool = False) -> None:
        """Log what was sent since the last line (``final``: since the start) and what is held."""
        counts = self.totals if final else self._counts
        parts = " ".join(f"{queue}={n}" for queue, n in sorted(counts.forwarded.items()))
        spool = self._held.spool
        spooled = f", {spool.pending} spooled on disk" if spool is not None and spool.active else ""
        waited = (
            f"; {counts.held} times a partial batch waited for a busy queue" if counts.held else ""
        )
        log.info(
            "%s: forwarded %s (%d batches%s), dead letters %d, buffered %d (%s held%s)%s",
            "total" if final else "last interval",
            parts or "nothing",
            counts.batches,
            f", {counts.mixed} of several types" if counts.mixed else "",
            counts.dead_letters,
            len(self._held.buffer),
            megabytes(max(self._held.held_bytes, 0)),
            spooled,
            waited,
        )
        if not final:
            self._counts = Counts()

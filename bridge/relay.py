"""The relay from Redis pub/sub to Celery: subscribe, route, hand over in batches.

Two threads share a buffer. The reader drains the subscription as fast as Redis
sends and never waits on Celery: Redis drops a subscriber whose unread output
passes its pub/sub buffer limit, and everything published after that is lost.
The sender groups what was read by event type and sends each group to its task
when it holds ``batch_size`` events or its oldest event has waited ``flush_ms``,
whichever comes first, so a lone event goes out at once and a burst goes out in
large batches. While the workers are behind (messages wait in the group's queue),
a partial batch waits longer, up to ``max_hold_ms``: a task's cost is mostly
fixed, so fewer and larger tasks are how the workers catch up. It parses no more
than routing needs (the event type); the workers validate. Nothing here opens a
database connection.

Memory is bounded: when Celery cannot take events as fast as they come, what is
read and not yet sent is held up to ``BRIDGE_MAX_BUFFER_BYTES``; past that the
pub/sub reader goes on draining Redis into a disk spool (``bridge/spool.py``),
read back in order as Celery catches up, and the stream reader
(``bridge/streams.py``) simply stops reading: its entries wait in Redis. When the
spool cannot be written (a full disk), the reader keeps what it reads in memory,
past the limit, and tries the spool again every :data:`SPOOL_RETRY_AFTER` seconds.

Neither thread may die alone: a reader with no sender would fill memory forever,
a sender with no reader would look alive and read nothing. An unexpected error in
the sender stops the reader; one in the reader stops the sender once it has
handed over what was read; either way :meth:`Bridge.run` raises
(:class:`BridgeFailed` for the sender) so that the process exits non-zero and its
supervisor restarts it.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from analytics.batch import EventItem, RejectedItem
from analytics.config import DEFAULT_MAX_JSON_DEPTH, Settings, safe_url
from analytics.errors import InvalidEvent
from analytics.events import category_of, decode_text, event_type_of
from analytics.limits import bound
from bridge.spool import Message, Spool
from bridge.subscriber import Subscription, SubscriptionLost
from tasks.queues import DEADLETTER_QUEUE, DEADLETTER_TASK, route_for

log = logging.getLogger("bridge")

#: ``send(task_name, queue, items)`` hands one batch to Celery.
Send = Callable[[str, str, list[list[Any]]], None]
RECONNECT_BACKOFF_MAX = 5.0
#: The sender polls at least this often for due groups and the stop signal.
IDLE_WAIT = 0.2
#: Bytes counted for each buffered message on top of its channel and payload: the
#: Python objects that carry it (bytes and str headers, tuple, list, float).
MESSAGE_OVERHEAD = 256
#: Seconds between two tries of a spool that could not be written (a full disk): a
#: disk is seldom freed within seconds, and each try costs a write that is undone;
#: soon enough that memory does not stay past its limit long once there is room.
SPOOL_RETRY_AFTER = 5.0
#: Bytes the sender reads back from the spool at a time while memory is past its
#: limit (the spool failed with messages behind it): it must not wait for room that
#: only reading the spool makes.
OVER_LIMIT_READ = 1 << 20


class BridgeFailed(RuntimeError):
    """A thread of the bridge died of an unexpected error (the cause): the bridge stopped."""


def route(
    channel: str,
    data: bytes,
    prefix: str,
    max_bytes: int,
    max_depth: int = DEFAULT_MAX_JSON_DEPTH,
) -> tuple[str, str, str]:
    """``(task, queue, text)`` for a message, or InvalidEvent saying why it cannot be routed.

    The checks are the workers' own (analytics.events: size, depth, UTF-8, a JSON
    object, its event type), not the schema: the workers validate the rest.
    """
    if not category_of(channel, prefix):
        raise InvalidEvent(f"channel {channel!r} names no category after {prefix!r}")
    text, document = decode_text(data, max_bytes, max_depth)
    task, queue = route_for(event_type_of(document))
    return task, queue, text


def dead_letter_item(
    channel: str, data: bytes, received: float, reason: str, settings: Settings
) -> list[Any]:
    """The item (encoded) that hands a rejected message to the dead-letter task.

    Of a message over ``max_payload_bytes`` only the first ``dead_letter_keep_bytes``
    travel, with the size and SHA-256 of the whole: an oversized message must not
    cross the broker whole.
    """
    kept = bound(
        data, settings.max_payload_bytes, settings.dead_letter_keep_bytes, settings.pii_salt
    )
    return RejectedItem(channel, kept.head, received, reason, kept.size, kept.sha256).encode()


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

    def due(self, flush_after: float) -> float:
        return max(self.since + flush_after, self.held_until)


@dataclass
class Counts:
    """What the bridge did since the last log line."""

    forwarded: collections.Counter[str] = field(default_factory=collections.Counter)
    dead_letters: int = 0
    batches: int = 0
    #: Partial batches held past the flush time because their queue had a backlog.
    held: int = 0


class Bridge:
    """Reads ``settings.event_channel_pattern`` and hands events to their Celery tasks.

    This class reads Redis pub/sub; :class:`bridge.streams.StreamBridge` reads
    Redis Streams into the same buffer and sender. Everything read and not yet
    handed over is held in memory up to ``bridge_max_buffer_bytes`` (channel and
    payload bytes plus :data:`MESSAGE_OVERHEAD` each); past it, the pub/sub reader
    spills to a :class:`~bridge.spool.Spool` file so that it never stops draining
    Redis, and the stream reader stops reading until there is room.
    """

    #: Whether what was read can be left unacknowledged for another bridge to take.
    durable = False

    def __init__(self, settings: Settings, send: Send):
        self.settings = settings
        self.send = send
        self.prefix = settings.channel_prefix
        self.batch_size = settings.bridge_batch_size
        self.flush_after = settings.bridge_flush_ms / 1000.0
        self.max_hold = max(settings.bridge_max_hold_ms / 1000.0, self.flush_after)
        #: Queues seen with messages waiting, and when they were looked at.
        self._busy: frozenset[str] = frozenset()
        self._busy_at = -1e9
        self.max_buffer_bytes = settings.bridge_max_buffer_bytes
        self._buffer: collections.deque[Message] = collections.deque()
        # Held bytes = in + loaded - out; each counter has one writer thread.
        self._bytes_in = 0  # reader: put in memory
        self._bytes_loaded = 0  # sender: read back from the spool
        self._bytes_out = 0  # sender: handed over (or, durable and stopping, let go)
        self._peak_in = self._peak_loaded = 0
        self._spool: Spool | None = None
        #: When the spool last failed to take messages (monotonic), None while it works.
        self._spool_failed_at: float | None = None
        self._spool_failed_since = 0.0
        #: Spool writes that failed (each one undone) since the bridge started.
        self.spool_failures = 0
        #: Read while the spool held messages and could not be written: they come after
        #: everything in the spool, and the sender takes them once it has read it all.
        self._overflow: collections.deque[Message] = collections.deque()
        self._spilled = 0
        #: Messages the reader took from Redis since the bridge started.
        self.received = 0
        self._spill_started = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._reader_done = threading.Event()
        self._subscribed = threading.Event()
        self._sender: threading.Thread | None = None
        #: The reader's pub/sub connection, closed by :meth:`run` if the reader fails.
        self._subscription: Subscription | None = None
        self._sender_error: BaseException | None = None
        self._groups: dict[str, Group] = {}
        self._counts = Counts()
        self.totals = Counts()
        self._last_received = 0.0
        #: How this bridge's connection shows in ``CLIENT LIST``.
        self.client_name = f"analytics-bridge-{socket.gethostname()}-{os.getpid()}"

    # ----------------------------------------------------------------- control

    def stop(self) -> None:
        """Stop reading, hand over everything read, then return from :meth:`run`."""
        self._stop.set()
        self._wake.set()

    @property
    def subscribed(self) -> threading.Event:
        """Set while the reader is connected and reading."""
        return self._subscribed

    @property
    def held_bytes(self) -> int:
        """Bytes read and not yet handed to Celery, in memory (the spool not included)."""
        return self._bytes_in + self._bytes_loaded - self._bytes_out

    @property
    def peak_held_bytes(self) -> int:
        return max(self._peak_in, self._peak_loaded)

    @property
    def spilled(self) -> int:
        """Messages that went through the disk spool since the bridge started."""
        return self._spilled

    @property
    def spool_peak_bytes(self) -> int:
        return self._spool.peak_bytes if self._spool is not None else 0

    @property
    def sender(self) -> threading.Thread | None:
        """The sender thread, once :meth:`run` started it."""
        return self._sender

    def run(self) -> None:
        """Read and send until :meth:`stop`; raise if either thread failed.

        An unexpected error in the reader is raised once the sender has handed over
        what was read (as on a stop); one in the sender stops the reader at once (no
        thread is left to send what it reads) and is raised as :class:`BridgeFailed`.
        """
        sender = self._sender = threading.Thread(
            target=self._run_sender, name="bridge-sender", daemon=True
        )
        sender.start()
        try:
            self._read_loop()
        except Exception:
            log.critical(
                "the reader failed: handing over what was read, then exiting", exc_info=True
            )
            # As on a stop: the stream bridge then leaves what it cannot send pending.
            self._stop.set()
            if self._subscription is not None:  # no longer read: Redis must not keep it
                self._subscription.close()
            raise
        finally:
            self._subscribed.clear()
            self._reader_done.set()
            self._wake.set()
            sender.join()
            self._close()
            self._log_counts(final=True)
        if self._sender_error is not None:
            raise BridgeFailed(
                f"the sender failed ({self._sender_error!r}); the bridge stopped"
            ) from self._sender_error

    def _run_sender(self) -> None:
        """The sender thread: :meth:`_send_loop`, and if it dies, the reader with it."""
        try:
            self._send_loop()
        except BaseException as exc:  # whatever it is, this thread is gone: say so and stop
            self._sender_error = exc
            spool = self._spool
            log.critical(
                "the sender failed: stopping the reader and exiting; %d messages read and "
                "not handed over (%s in memory%s) are %s",
                len(self._buffer)
                + len(self._overflow)
                + sum(len(group.items) for group in list(self._groups.values()))
                + (spool.pending if spool is not None else 0),
                megabytes(max(self.held_bytes, 0)),
                f", {spool.pending} spooled" if spool is not None and spool.active else "",
                "left pending for another bridge" if self.durable else "lost",
                exc_info=True,
            )
            self.stop()

    def _close(self) -> None:
        """Release what the bridge holds once the sender is done (the spool file)."""
        if self._spool is not None:
            self._spool.close()

    # ------------------------------------------------------------------ reader

    def _read_loop(self) -> None:
        pattern = self.settings.event_channel_pattern
        lost_at: float | None = None
        delay = 0.1
        subscription: Subscription | None = None
        while not self._stop.is_set():
            if subscription is None:
                try:
                    subscription = Subscription(self.settings.redis_url, pattern, self.client_name)
                except (OSError, SubscriptionLost) as exc:
                    log.warning(
                        "cannot subscribe to %s (%s); retrying in %.1fs", pattern, exc, delay
                    )
                    self._stop.wait(delay)
                    delay = min(delay * 2, RECONNECT_BACKOFF_MAX)
                    continue
                delay = 0.1
                self._subscription = subscription
                if lost_at is None:
                    log.info("subscribed to %s on %s", pattern, safe_url(self.settings.redis_url))
                else:
                    log.warning(
                        "resubscribed to %s after a gap of %.2fs: events published in the gap "
                        "were not delivered by Redis pub/sub",
                        pattern,
                        time.monotonic() - lost_at,
                    )
                    lost_at = None
                self._subscribed.set()
            try:
                received = time.time()
                messages: list[Message] = []
                size = 0
                for channel, data in subscription.read():
                    messages.append((channel, data, received, None))
                    size += len(channel) + len(data)
                if messages:
                    self._hold(messages, size + len(messages) * MESSAGE_OVERHEAD)
            except (SubscriptionLost, OSError) as exc:
                log.warning("lost the Redis connection (%s); reconnecting", exc)
                self._subscribed.clear()
                subscription.close()
                subscription = None
                lost_at = time.monotonic()
        if subscription is not None:
            subscription.close()

    def _hold(self, messages: list[Message], size: int) -> None:
        """Keep what the reader read: in memory while there is room, else in the spool.

        Once spilling, everything goes to the spool until the sender has read it all
        back, so that messages keep their order. When the spool cannot be written (a
        full disk), what it would have taken stays in memory, past the limit: if the
        spool holds messages, behind them (``_overflow``, taken once it is read back,
        and no other try of the spool until then, since an append would go before
        them), else in the buffer like any other, and the spool is tried again after
        :data:`SPOOL_RETRY_AFTER`. That keeps the order messages were read in.
        """
        if self._overflow:
            self._keep(messages, size, self._overflow)
            return
        spilling = self._spooling()
        if (spilling or self.held_bytes + size > self.max_buffer_bytes) and self._spill(
            messages, size
        ):
            self.received += len(messages)
            return
        # The spool failed: behind what it holds, if anything (it rolled back this batch).
        self._keep(messages, size, self._overflow if self._spooling() else None)

    def _keep(
        self, messages: list[Message], size: int, queue: collections.deque[Message] | None = None
    ) -> None:
        """Put messages in the in-memory buffer (or ``queue``) for the sender (``size``: their
        bytes)."""
        self.received += len(messages)
        queue = self._buffer if queue is None else queue
        queue.extend(messages)
        self._bytes_in += size
        self._peak_in = max(self._peak_in, self.held_bytes)
        if len(queue) >= self.batch_size:
            self._wake.set()

    def _spill(self, messages: list[Message], size: int) -> bool:
        """Append to the spool; False when there is no usable spool (then memory it is).

        After a failure the spool is left alone for :data:`SPOOL_RETRY_AFTER` seconds.
        """
        now = time.monotonic()
        failed_at = self._spool_failed_at
        if failed_at is not None and now - failed_at < SPOOL_RETRY_AFTER:
            return False
        try:
            if self._spool is None:
                self._spool = Spool(self.settings.bridge_spool_dir or None)
            starting = not self._spool.active
            self._spool.append(messages)  # all or nothing: a failure leaves it as it was
        except OSError as exc:
            spool = self._spool
            if failed_at is None:
                self._spool_failed_since = now
            self._spool_failed_at = now
            self.spool_failures += 1
            log.error(
                "cannot write the spool in %s (%s): holding what Redis sends in memory, "
                "past BRIDGE_MAX_BUFFER_BYTES (%s held, limit %s%s); trying the spool again "
                "in %.0fs",
                self.settings.bridge_spool_dir or "the temporary directory",
                exc,
                megabytes(self.held_bytes + size),
                megabytes(self.max_buffer_bytes),
                f", {spool.pending} still spooled" if spool is not None and spool.active else "",
                SPOOL_RETRY_AFTER,
            )
            return False
        if failed_at is not None:
            self._spool_failed_at = None
            log.warning(
                "the spool in %s takes messages again after %.1fs of failures: spilling "
                "to it again (%s held in memory)",
                self._spool.directory,
                now - self._spool_failed_since,
                megabytes(self.held_bytes),
            )
        if starting:
            self._spill_started = time.monotonic()
            log.warning(
                "buffer full (%s held, limit %s): Celery is not keeping up; spilling what "
                "Redis sends to a spool file in %s so that Redis is still drained",
                megabytes(self.held_bytes),
                megabytes(self.max_buffer_bytes),
                self._spool.directory,
            )
        self._spilled += len(messages)
        return True

    # ------------------------------------------------------------------ sender

    def _send_loop(self) -> None:
        last_log = last_sweep = time.monotonic()
        while True:
            self._wake.wait(self._next_wait())
            self._wake.clear()
            finishing = self._reader_done.is_set()
            self._drain()
            self._flush(force=finishing)
            now = time.monotonic()
            if now - last_log >= self.settings.bridge_log_interval:
                self._log_counts()
                last_log = now
            if now - last_sweep >= self.settings.restore_interval:
                self._sweep_ledger()
                last_sweep = now
            if (
                finishing
                and not self._buffer
                and not self._overflow
                and not self._groups
                and not self._spooling()
            ):
                return

    def _sweep_ledger(self) -> None:
        """Re-send what workers lost (a ``send`` with a delivery ledger has ``sweep``)."""
        sweep = getattr(self.send, "sweep", None)
        if sweep is None:
            return
        try:
            sweep()
        except Exception as exc:  # Redis away: the next sweep tries again
            log.warning("could not sweep the delivery ledger (%s)", exc)

    def _spooling(self) -> bool:
        return self._spool is not None and self._spool.active

    def _next_wait(self) -> float:
        if (
            self._buffer
            or self._overflow
            or (self._spooling() and self.held_bytes < self.max_buffer_bytes)
        ):
            return 0.0
        if not self._groups:
            return IDLE_WAIT
        due = min(group.due(self.flush_after) for group in self._groups.values())
        return max(0.0, due - time.monotonic())

    def _drain(self) -> None:
        """Group what the reader buffered, then what the spool holds while there is room,
        then what waited behind the spool once it is all read back."""
        buffer = self._buffer
        self._group(buffer.popleft() for _ in range(len(buffer)))
        spool = self._spool
        if spool is None or not spool.active:
            self._drain_overflow()
            return
        room = self.max_buffer_bytes - self.held_bytes
        if self._overflow:
            # Memory is past its limit with messages waiting for the spool to be read
            # back: read it anyway, or they would wait for room that never comes.
            room = max(room, OVER_LIMIT_READ)
        if room > 0:
            messages = spool.take(room, MESSAGE_OVERHEAD)
            self._bytes_loaded += sum(
                len(channel) + len(data) + MESSAGE_OVERHEAD for channel, data, _, _ in messages
            )
            self._peak_loaded = max(self._peak_loaded, self.held_bytes)
            self._group(messages)
        if spool.finish_if_empty():
            log.warning(
                "caught up: %d messages went through the spool in %.1fs (file peaked at %s); "
                "back to memory",
                self._spilled,
                time.monotonic() - self._spill_started,
                megabytes(spool.peak_bytes),
            )
            self._drain_overflow()

    def _drain_overflow(self) -> None:
        """Group what the reader kept behind a failed spool, once the spool is read back."""
        overflow = self._overflow
        if overflow:
            self._group(overflow.popleft() for _ in range(len(overflow)))

    def _group(self, messages: Iterable[Message]) -> None:
        groups, now = self._groups, time.monotonic()
        max_bytes, max_depth = self.settings.max_payload_bytes, self.settings.max_json_depth
        for raw_channel, data, received, receipt in messages:
            channel = raw_channel.decode("utf-8", "replace")
            if "\x00" in channel:  # no text column can hold it; like bad UTF-8, replaced
                channel = channel.replace("\x00", "\ufffd")
            try:
                if receipt is not None and receipt.problem:
                    raise InvalidEvent(receipt.problem)
                task, queue, text = route(channel, data, self.prefix, max_bytes, max_depth)
                item = EventItem(channel, text, received).encode()
            except InvalidEvent as exc:
                task, queue = DEADLETTER_TASK, DEADLETTER_QUEUE
                item = dead_letter_item(channel, data, received, str(exc), self.settings)
                log.info("dead letter from %s: %s", channel, exc)
            group = groups.get(task)
            if group is None:
                # After a quiet spell, an event goes out at once (its group is due):
                # waiting to fill a batch only pays while events keep coming.
                quiet = received - self._last_received >= self.flush_after
                group = groups[task] = Group(queue=queue, since=now - quiet * self.flush_after)
            group.items.append(item)
            group.sizes.append(len(raw_channel) + len(data) + MESSAGE_OVERHEAD)
            group.receipts.append(receipt)
            self._last_received = received

    def _flush(self, force: bool) -> None:
        now = time.monotonic()
        for task in list(self._groups):
            group = self._groups[task]
            while len(group.items) >= self.batch_size:
                self._send(task, group, self.batch_size)
            if group.items and (force or now >= group.due(self.flush_after)):
                if not force and self._hold_back(group, now):
                    continue
                self._send(task, group, len(group.items))
            if not group.items:
                self._groups.pop(task, None)

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
            queues = {group.queue for group in self._groups.values()}
            try:
                self._busy = frozenset(
                    q for q, waiting in backlog(sorted(queues)).items() if waiting
                )
            except Exception as exc:  # the broker away: send as if idle (send will retry)
                log.debug("could not read the queues' backlog (%s)", exc)
                self._busy = frozenset()
        return self._busy

    def _send(self, task: str, group: Group, count: int) -> None:
        """Hand the group's first ``count`` items to Celery, then acknowledge them."""
        items = group.items[:count]
        handed_over = True
        while True:
            try:
                self.send(task, group.queue, items)
                break
            except Exception as exc:
                if self.durable and self._stop.is_set():
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
        receipts = group.receipts[:count]
        self._bytes_out += sum(group.sizes[:count])
        del group.items[:count], group.sizes[:count], group.receipts[:count]
        group.since = time.monotonic()
        group.held_until = 0.0
        if handed_over:
            self._acknowledge(receipts)
        else:
            self._release(receipts)
            return
        for counts in (self._counts, self.totals):
            counts.batches += 1
            if task == DEADLETTER_TASK:
                counts.dead_letters += count
            else:
                counts.forwarded[group.queue] += count

    def _acknowledge(self, receipts: list[Any]) -> None:
        """Tell the source that these messages are with Celery (pub/sub: nothing to tell)."""

    def _release(self, receipts: list[Any]) -> None:
        """Tell the source that these messages were let go without being handed over."""

    def _log_counts(self, final: bool = False) -> None:
        counts = self.totals if final else self._counts
        parts = " ".join(f"{queue}={n}" for queue, n in sorted(counts.forwarded.items()))
        spool = self._spool
        spooled = f", {spool.pending} spooled on disk" if spool is not None and spool.active else ""
        waited = (
            f"; {counts.held} times a partial batch waited for a busy queue" if counts.held else ""
        )
        log.info(
            "%s: forwarded %s (%d batches), dead letters %d, buffered %d (%s held%s)%s",
            "total" if final else "last interval",
            parts or "nothing",
            counts.batches,
            counts.dead_letters,
            len(self._buffer),
            megabytes(max(self.held_bytes, 0)),
            spooled,
            waited,
        )
        if not final:
            self._counts = Counts()


def megabytes(size: int) -> str:
    """A byte count for logs: ``12.3 MB`` (``16 KB`` below a megabyte)."""
    if abs(size) < 1 << 20:
        return f"{size / 1024:.0f} KB"
    return f"{size / (1 << 20):.1f} MB"

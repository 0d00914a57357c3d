"""The relay from Redis pub/sub to Celery: two threads, how they fail, and the pub/sub reader.

Two threads share what was read. The reader drains the subscription as fast as
Redis sends and never waits on Celery: Redis drops a subscriber whose unread
output passes its pub/sub buffer limit, and everything published after that is
lost. The sender groups what was read by task and sends it in batches
(``bridge/batching.py``: when full, when due, longer while the workers are
behind). It parses no more than routing needs (``bridge/routing.py``: the event
type); the workers validate. Nothing here opens a database connection.

Memory is bounded (``bridge/holding.py``): what is read and not yet sent is held
up to ``BRIDGE_MAX_BUFFER_BYTES``; past that the pub/sub reader goes on draining
Redis into a disk spool (``bridge/spool.py``), read back in order as Celery
catches up, and the stream reader (``bridge/streams.py``) simply stops reading:
its entries wait in Redis.

Neither thread may die alone: a reader with no sender would fill memory forever,
a sender with no reader would look alive and read nothing. An unexpected error in
the sender stops the reader; one in the reader stops the sender once it has
handed over what was read; either way :meth:`Bridge.run` raises
(:class:`BridgeFailed` for the sender) so that the process exits non-zero and its
supervisor restarts it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

from analytics.config import Settings, safe_url
from bridge import metrics
from bridge.batching import Batcher, Send
from bridge.holding import (
    MESSAGE_OVERHEAD,
    SPOOL_RETRY_AFTER,
    Holding,
    megabytes,
)
from bridge.routing import dead_letter_item, route
from bridge.spool import Message
from bridge.subscriber import Subscription, SubscriptionLost

# What the bridge's parts own, importable from here as before the split.
__all__ = [
    "MESSAGE_OVERHEAD",
    "SPOOL_RETRY_AFTER",
    "Bridge",
    "BridgeFailed",
    "Send",
    "dead_letter_item",
    "megabytes",
    "route",
]

log = logging.getLogger("bridge")

RECONNECT_BACKOFF_MAX = 5.0
#: The sender polls at least this often for due groups and the stop signal.
IDLE_WAIT = 0.2
#: After a read of less than READ_SMALL bytes, the reader waits at least this long before
#: the next one, so that a trickle of messages (one PUBLISH each) is read a few at a time,
#: not one thread wake-up each; a busy stream's reads are large and never wait. Redis
#: keeps what arrives meanwhile in the connection's output buffer.
READ_PAUSE = 0.01
READ_SMALL = 64 * 1024
#: While a batch is pending, the reader waits after a small read until this long before
#: the batch is due (at most READ_PAUSE_MAX): what arrives meanwhile goes in that batch
#: whenever it is read, so one read just before the batch goes replaces a read every
#: READ_PAUSE (at 500 events/s, ~15 wake-ups of the reader, and Redis, a batch).
READ_AHEAD = 0.005
READ_PAUSE_MAX = 0.25


class BridgeFailed(RuntimeError):
    """A thread of the bridge died of an unexpected error (the cause): the bridge stopped."""


class Bridge:
    """Reads ``settings.event_channel_pattern`` and hands events to their Celery tasks.

    This class reads Redis pub/sub; :class:`bridge.streams.StreamBridge` reads
    Redis Streams into the same buffer and sender. What is read and not yet handed
    over is held by a :class:`~bridge.holding.Holding` (memory up to
    ``bridge_max_buffer_bytes``, then the spool for pub/sub); the sender thread
    groups and sends it with a :class:`~bridge.batching.Batcher`.
    """

    #: Whether what was read can be left unacknowledged for another bridge to take.
    durable = False

    def __init__(self, settings: Settings, send: Send):
        self.settings = settings
        self.send = send
        self.batch_size = settings.bridge_batch_size
        self.max_buffer_bytes = settings.bridge_max_buffer_bytes
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._reader_done = threading.Event()
        self._subscribed = threading.Event()
        #: Reads that returned messages (a trickle is read a few messages at a time).
        self.reads = 0
        self._held = Holding(settings, self._wake)
        self._batches = Batcher(
            settings,
            send,
            self._held,
            durable=self.durable,
            stopping=self._stop,
            acknowledge=self._acknowledge,
            release=self._release,
        )
        # The same objects as the parts', for a look from outside (tests, counts).
        self._buffer = self._held.buffer
        self._groups = self._batches.groups
        self.totals = self._batches.totals
        self._sender: threading.Thread | None = None
        #: When the first pending batch is due (monotonic), as the sender last saw it;
        #: None with nothing pending. Written by the sender, read by the reader.
        self._read_by: float | None = None
        #: The reader's pub/sub connection, closed by :meth:`run` if the reader fails.
        self._subscription: Subscription | None = None
        self._sender_error: BaseException | None = None
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
    def sender(self) -> threading.Thread | None:
        """The sender thread, once :meth:`run` started it."""
        return self._sender

    @property
    def received(self) -> int:
        """Messages the reader took from Redis since the bridge started."""
        return self._held.received

    @property
    def held_bytes(self) -> int:
        """Bytes read and not yet handed to Celery, in memory (the spool not included)."""
        return self._held.held_bytes

    @property
    def peak_held_bytes(self) -> int:
        return self._held.peak_held_bytes

    @property
    def spilled(self) -> int:
        """Messages that went through the disk spool since the bridge started."""
        return self._held.spilled

    @property
    def spool_peak_bytes(self) -> int:
        return self._held.spool_peak_bytes

    @property
    def spool_bytes(self) -> int:
        """Bytes in the disk spool not read back yet."""
        spool = self._held.spool
        return spool.bytes_pending if spool is not None else 0

    @property
    def spool_failures(self) -> int:
        """Spool writes that failed (each one undone) since the bridge started."""
        return self._held.spool_failures

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
            held = self._held
            spool = held.spool
            log.critical(
                "the sender failed: stopping the reader and exiting; %d messages read and "
                "not handed over (%s in memory%s) are %s",
                held.unsent() + self._batches.pending(),
                megabytes(max(held.held_bytes, 0)),
                f", {spool.pending} spooled" if spool is not None and spool.active else "",
                "left pending for another bridge" if self.durable else "lost",
                exc_info=True,
            )
            self.stop()

    def _close(self) -> None:
        """Release what the bridge holds once the sender is done (the spool file)."""
        self._held.close()

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
                messages: list[Message] = []
                size = 0
                received = 0.0
                for channel, data in subscription.read():
                    if not messages:
                        # When they arrived: read() may have waited up to a second first,
                        # and a batch's hold counts from its first event's arrival.
                        received = time.time()
                    messages.append((channel, data, received, None))
                    size += len(channel) + len(data)
                if messages:
                    self.reads += 1
                    self._held.hold(messages, size + len(messages) * MESSAGE_OVERHEAD)
                    if size < READ_SMALL:
                        self._stop.wait(self._read_pause())
            except (SubscriptionLost, OSError) as exc:
                log.warning("lost the Redis connection (%s); reconnecting", exc)
                metrics.RECONNECTS.inc()
                self._subscribed.clear()
                subscription.close()
                subscription = None
                lost_at = time.monotonic()
        if subscription is not None:
            subscription.close()

    def _read_pause(self) -> float:
        """How long the reader waits after a small read: READ_PAUSE, or, while a batch is
        pending, until READ_AHEAD before it is due (at most READ_PAUSE_MAX).

        The wait costs no latency: a pending batch goes when it is due, with everything
        read by then, and what arrives during the wait is read before that. Only what
        arrives in the last READ_AHEAD goes in the next batch, as it may today with a
        read every READ_PAUSE.
        """
        due = self._read_by
        if due is None:
            return READ_PAUSE
        return min(max(READ_PAUSE, due - READ_AHEAD - time.monotonic()), READ_PAUSE_MAX)

    # ------------------------------------------------------------------ sender

    def _send_loop(self) -> None:
        last_log = last_sweep = time.monotonic()
        while True:
            self._wake.wait(self._next_wait())
            self._wake.clear()
            finishing = self._reader_done.is_set()
            self._held.drain(self._batches.group)
            self._flush(force=finishing)
            now = time.monotonic()
            if now - last_log >= self.settings.bridge_log_interval:
                self._log_counts()
                last_log = now
            if now - last_sweep >= self.settings.restore_interval:
                self._batches.sweep_ledger()
                last_sweep = now
            if finishing and self._held.empty() and not self._batches.groups:
                return

    def _next_wait(self) -> float:
        due = self._batches.next_due()
        # Asked before the buffer is looked at: a message put in after this wakes the
        # sender, one put in before is seen below (Holding.keep reads the flag after it
        # appended).
        self._held.wake_on_next = due is None
        self._read_by = due
        if self._held.waiting():
            return 0.0
        if due is None:
            return IDLE_WAIT
        return max(0.0, due - time.monotonic())

    # The sender's steps by name, for a test to drive.
    def _group(self, messages: Iterable[Message]) -> None:
        self._batches.group(messages)

    def _flush(self, force: bool) -> None:
        self._batches.flush(force)

    def _acknowledge(self, receipts: list[Any]) -> None:
        """Tell the source that these messages are with Celery (pub/sub: nothing to tell)."""

    def _release(self, receipts: list[Any]) -> None:
        """Tell the source that these messages were let go without being handed over."""

    def _log_counts(self, final: bool = False) -> None:
        self._batches.log_counts(final)

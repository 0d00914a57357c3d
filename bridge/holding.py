"""What the bridge holds between reading and sending: memory up to a limit, then a disk spool.

The reader hands over what it read (:meth:`Holding.hold` for pub/sub, which must
never stop draining Redis; :meth:`Holding.keep` for the stream reader, which
stops reading instead). Up to ``BRIDGE_MAX_BUFFER_BYTES`` it stays in memory;
past that, pub/sub messages go to a :class:`~bridge.spool.Spool` file, read back
in order by the sender as room frees up (:meth:`Holding.drain`). When the spool
cannot be written (a full disk), messages stay in memory, past the limit, and the
spool is tried again every :data:`SPOOL_RETRY_AFTER` seconds; if the spool still
holds messages, the new ones wait behind it (the overflow queue), so the order
they were read in is kept.

Bytes held are counted here, as they go in, come back from the spool and go out:
that count is the limit's measure and what the logs and the benchmarks report.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable

from analytics.config import Settings
from bridge.spool import Message, Spool

log = logging.getLogger("bridge")

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


class Holding:
    """Messages read and not yet grouped for sending: in memory, in the spool, or behind it.

    Two threads use it: the reader puts in (:meth:`hold`, :meth:`keep`), the sender
    takes out (:meth:`drain`) and says what it handed over (:meth:`let_go`). Each
    byte counter has one writer thread, so no lock is needed.
    """

    def __init__(self, settings: Settings, wake: threading.Event):
        self.settings = settings
        self.max_buffer_bytes = settings.bridge_max_buffer_bytes
        self.batch_size = settings.bridge_batch_size
        #: Set when the sender has a batch's worth to take, or any message while
        #: ``wake_on_next`` says it sleeps with no group to wait for.
        self._wake = wake
        #: Set by the sender before it looks at the buffer and sleeps with no group: the
        #: next message must wake it, or that message would wait up to its idle sleep
        #: before its batch's hold even began. Cleared by the wake, so that a stream of
        #: messages wakes it once, not once each.
        self.wake_on_next = False
        self.buffer: collections.deque[Message] = collections.deque()
        # Held bytes = in + loaded - out; each counter has one writer thread.
        self._bytes_in = 0  # reader: put in memory
        self._bytes_loaded = 0  # sender: read back from the spool
        self._bytes_out = 0  # sender: handed over (or, durable and stopping, let go)
        self._peak_in = self._peak_loaded = 0
        self.spool: Spool | None = None
        #: When the spool last failed to take messages (monotonic), None while it works.
        self._spool_failed_at: float | None = None
        self._spool_failed_since = 0.0
        #: Spool writes that failed (each one undone) since the bridge started.
        self.spool_failures = 0
        #: Read while the spool held messages and could not be written: they come after
        #: everything in the spool, and the sender takes them once it has read it all.
        self.overflow: collections.deque[Message] = collections.deque()
        #: Messages that went through the disk spool since the bridge started.
        self.spilled = 0
        #: Messages the reader took from Redis since the bridge started.
        self.received = 0
        self._spill_started = 0.0

    @property
    def held_bytes(self) -> int:
        """Bytes read and not yet handed to Celery, in memory (the spool not included)."""
        return self._bytes_in + self._bytes_loaded - self._bytes_out

    @property
    def peak_held_bytes(self) -> int:
        return max(self._peak_in, self._peak_loaded)

    @property
    def spool_peak_bytes(self) -> int:
        return self.spool.peak_bytes if self.spool is not None else 0

    def spooling(self) -> bool:
        return self.spool is not None and self.spool.active

    def waiting(self) -> bool:
        """Whether the sender has something to take now."""
        return bool(
            self.buffer
            or self.overflow
            or (self.spooling() and self.held_bytes < self.max_buffer_bytes)
        )

    def empty(self) -> bool:
        return not self.buffer and not self.overflow and not self.spooling()

    def unsent(self) -> int:
        """Messages held here: in memory, behind the spool and in it."""
        spool = self.spool
        return len(self.buffer) + len(self.overflow) + (spool.pending if spool is not None else 0)

    def close(self) -> None:
        """Remove the spool file (once the sender is done)."""
        if self.spool is not None:
            self.spool.close()

    # ------------------------------------------------------------------ reader

    def hold(self, messages: list[Message], size: int) -> None:
        """Keep what the reader read: in memory while there is room, else in the spool.

        Once spilling, everything goes to the spool until the sender has read it all
        back, so that messages keep their order. When the spool cannot be written (a
        full disk), what it would have taken stays in memory, past the limit: if the
        spool holds messages, behind them (``overflow``, taken once it is read back,
        and no other try of the spool until then, since an append would go before
        them), else in the buffer like any other, and the spool is tried again after
        :data:`SPOOL_RETRY_AFTER`. That keeps the order messages were read in.
        """
        if self.overflow:
            self.keep(messages, size, self.overflow)
            return
        spilling = self.spooling()
        if (spilling or self.held_bytes + size > self.max_buffer_bytes) and self._spill(
            messages, size
        ):
            self.received += len(messages)
            return
        # The spool failed: behind what it holds, if anything (it rolled back this batch).
        self.keep(messages, size, self.overflow if self.spooling() else None)

    def keep(
        self, messages: list[Message], size: int, queue: collections.deque[Message] | None = None
    ) -> None:
        """Put messages in the in-memory buffer (or ``queue``) for the sender (``size``: their
        bytes)."""
        self.received += len(messages)
        queue = self.buffer if queue is None else queue
        queue.extend(messages)
        self._bytes_in += size
        self._peak_in = max(self._peak_in, self.held_bytes)
        if self.wake_on_next or len(queue) >= self.batch_size:
            self.wake_on_next = False
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
            if self.spool is None:
                self.spool = Spool(self.settings.bridge_spool_dir or None)
            starting = not self.spool.active
            self.spool.append(messages)  # all or nothing: a failure leaves it as it was
        except OSError as exc:
            spool = self.spool
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
                self.spool.directory,
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
                self.spool.directory,
            )
        self.spilled += len(messages)
        return True

    # ------------------------------------------------------------------ sender

    def drain(self, group: Callable[[Iterable[Message]], None]) -> None:
        """Hand ``group`` what the reader buffered, then what the spool holds while there is
        room, then what waited behind the spool once it is all read back."""
        spool = self.spool
        # Whether the spool is in use is read before the buffer is taken. The reader
        # may, in between, put a message in the buffer and then (memory full) start the
        # spool with later ones: taking that spool now would hand the later messages
        # over before the earlier one. While the spool is in use the reader adds
        # nothing to the buffer, so what the buffer holds then is older than the spool.
        spooling = spool is not None and spool.active
        buffer = self.buffer
        group(buffer.popleft() for _ in range(len(buffer)))
        if spool is None or not spooling:
            self._drain_overflow(group)
            return
        room = self.max_buffer_bytes - self.held_bytes
        if self.overflow:
            # Memory is past its limit with messages waiting for the spool to be read
            # back: read it anyway, or they would wait for room that never comes.
            room = max(room, OVER_LIMIT_READ)
        if room > 0:
            messages = spool.take(room, MESSAGE_OVERHEAD)
            self._bytes_loaded += sum(
                len(channel) + len(data) + MESSAGE_OVERHEAD for channel, data, _, _ in messages
            )
            self._peak_loaded = max(self._peak_loaded, self.held_bytes)
            group(messages)
        if spool.finish_if_empty():
            log.warning(
                "caught up: %d messages went through the spool in %.1fs (file peaked at %s); "
                "back to memory",
                self.spilled,
                time.monotonic() - self._spill_started,
                megabytes(spool.peak_bytes),
            )
            self._drain_overflow(group)

    def _drain_overflow(self, group: Callable[[Iterable[Message]], None]) -> None:
        """Group what the reader kept behind a failed spool, once the spool is read back."""
        overflow = self.overflow
        if overflow:
            group(overflow.popleft() for _ in range(len(overflow)))

    def let_go(self, size: int) -> None:
        """``size`` bytes are no longer held: handed over (or, durable and stopping, let go)."""
        self._bytes_out += size


def megabytes(size: int) -> str:
    """A byte count for logs: ``12.3 MB`` (``16 KB`` below a megabyte)."""
    if abs(size) < 1 << 20:
        return f"{size / 1024:.0f} KB"
    return f"{size / (1 << 20):.1f} MB"

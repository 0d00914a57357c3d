"""The relay from Redis pub/sub to Celery: subscribe, route, hand over in batches.

Two threads share a buffer. The reader drains the subscription as fast as Redis
sends and never waits on Celery: Redis drops a subscriber whose unread output
passes its pub/sub buffer limit, and everything published after that is lost.
The sender groups what was read by event type and sends each group to its task
when it holds ``batch_size`` events or its oldest event has waited ``flush_ms``,
whichever comes first, so a lone event goes out at once and a burst goes out in
large batches. It parses no more than routing needs (the event type); the
workers validate. Nothing here opens a database connection.
"""

from __future__ import annotations

import base64
import collections
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from analytics.config import DEFAULT_MAX_JSON_DEPTH, Settings
from analytics.limits import depth_problem
from bridge.subscriber import Subscription, SubscriptionLost
from tasks.queues import DEADLETTER_QUEUE, DEADLETTER_TASK, route_for

log = logging.getLogger("bridge")

#: ``send(task_name, queue, items)`` hands one batch to Celery.
Send = Callable[[str, str, list[list[Any]]], None]
RECONNECT_BACKOFF_MAX = 5.0
#: The sender polls at least this often for due groups and the stop signal.
IDLE_WAIT = 0.2


class Rejection(Exception):
    """A message that cannot be routed to an event task: it goes to dead letters."""


def category_of(channel: str, prefix: str) -> str:
    """The first segment after the pattern's prefix: ``order`` for ``events:order:created``."""
    rest = channel[len(prefix) :] if channel.startswith(prefix) else channel
    return rest.split(":", 1)[0]


def route(
    channel: str,
    data: bytes,
    prefix: str,
    max_bytes: int,
    max_depth: int = DEFAULT_MAX_JSON_DEPTH,
) -> tuple[str, str, str]:
    """``(task, queue, text)`` for a message, or Rejection saying why it cannot be routed."""
    if len(data) > max_bytes:
        raise Rejection(f"payload is {len(data)} bytes, over the limit of {max_bytes}")
    too_deep = depth_problem(data, max_depth)
    if too_deep is not None:
        raise Rejection(too_deep)
    if not category_of(channel, prefix):
        raise Rejection(f"channel {channel!r} names no category after {prefix!r}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejection(f"payload is not valid UTF-8: {exc}") from None
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise Rejection(f"invalid JSON: {exc}") from None
    if not isinstance(document, dict):
        kind = type(document).__name__ if document is not None else "null"
        raise Rejection(f"event must be a JSON object, got {kind}")
    event_type = document.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        raise Rejection("invalid envelope: event_type: a non-empty string is required")
    task, queue = route_for(event_type)
    return task, queue, text


@dataclass
class Group:
    """Events waiting for the same task."""

    queue: str
    items: list[list[Any]] = field(default_factory=list)
    since: float = 0.0


@dataclass
class Counts:
    """What the bridge did since the last log line."""

    forwarded: collections.Counter[str] = field(default_factory=collections.Counter)
    dead_letters: int = 0
    batches: int = 0


class Bridge:
    """Reads ``settings.event_channel_pattern`` and hands events to their Celery tasks."""

    def __init__(self, settings: Settings, send: Send):
        self.settings = settings
        self.send = send
        self.prefix = settings.channel_prefix
        self.batch_size = settings.bridge_batch_size
        self.flush_after = settings.bridge_flush_ms / 1000.0
        self._buffer: collections.deque[tuple[bytes, bytes, float]] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._reader_done = threading.Event()
        self._subscribed = threading.Event()
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
        return self._subscribed

    def run(self) -> None:
        sender = threading.Thread(target=self._send_loop, name="bridge-sender", daemon=True)
        sender.start()
        try:
            self._read_loop()
        finally:
            self._reader_done.set()
            self._wake.set()
            sender.join()
            self._log_counts(final=True)

    # ------------------------------------------------------------------ reader

    def _read_loop(self) -> None:
        pattern = self.settings.event_channel_pattern
        lost_at: float | None = None
        delay = 0.1
        buffer, wake, batch_size = self._buffer, self._wake, self.batch_size
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
                if lost_at is None:
                    log.info("subscribed to %s on %s", pattern, _safe_url(self.settings.redis_url))
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
                for channel, data in subscription.read():
                    buffer.append((channel, data, received))
                if len(buffer) >= batch_size:
                    wake.set()
            except (SubscriptionLost, OSError) as exc:
                log.warning("lost the Redis connection (%s); reconnecting", exc)
                self._subscribed.clear()
                subscription.close()
                subscription = None
                lost_at = time.monotonic()
        if subscription is not None:
            subscription.close()

    # ------------------------------------------------------------------ sender

    def _send_loop(self) -> None:
        last_log = time.monotonic()
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
            if finishing and not self._buffer and not self._groups:
                return

    def _next_wait(self) -> float:
        if self._buffer:
            return 0.0
        if not self._groups:
            return IDLE_WAIT
        oldest = min(group.since for group in self._groups.values())
        return max(0.0, oldest + self.flush_after - time.monotonic())

    def _drain(self) -> None:
        buffer, groups, now = self._buffer, self._groups, time.monotonic()
        max_bytes, max_depth = self.settings.max_payload_bytes, self.settings.max_json_depth
        while buffer:
            raw_channel, data, received = buffer.popleft()
            channel = raw_channel.decode("utf-8", "replace")
            try:
                task, queue, text = route(channel, data, self.prefix, max_bytes, max_depth)
                item: list[Any] = [channel, text, received]
            except Rejection as exc:
                task, queue = DEADLETTER_TASK, DEADLETTER_QUEUE
                item = [channel, base64.b64encode(data).decode(), received, str(exc)]
                log.info("dead letter from %s: %s", channel, exc)
            group = groups.get(task)
            if group is None:
                # After a quiet spell, an event goes out at once (its group is due):
                # waiting to fill a batch only pays while events keep coming.
                quiet = received - self._last_received >= self.flush_after
                group = groups[task] = Group(queue=queue, since=now - quiet * self.flush_after)
            group.items.append(item)
            self._last_received = received

    def _flush(self, force: bool) -> None:
        now = time.monotonic()
        for task in list(self._groups):
            group = self._groups[task]
            while len(group.items) >= self.batch_size:
                self._send(task, group, group.items[: self.batch_size])
            if group.items and (force or now - group.since >= self.flush_after):
                self._send(task, group, group.items)
            if not group.items:
                self._groups.pop(task, None)

    def _send(self, task: str, group: Group, items: list[list[Any]]) -> None:
        sent = len(items)
        while True:
            try:
                self.send(task, group.queue, items)
                break
            except Exception as exc:
                # Keep the batch: a broker outage must not lose what was read.
                log.error("could not hand %d events to %s (%s); retrying", len(items), task, exc)
                time.sleep(0.5)
        del group.items[:sent]
        group.since = time.monotonic()
        for counts in (self._counts, self.totals):
            counts.batches += 1
            if task == DEADLETTER_TASK:
                counts.dead_letters += sent
            else:
                counts.forwarded[group.queue] += sent

    def _log_counts(self, final: bool = False) -> None:
        counts = self.totals if final else self._counts
        parts = " ".join(f"{queue}={n}" for queue, n in sorted(counts.forwarded.items()))
        log.info(
            "%s: forwarded %s (%d batches), dead letters %d, buffered %d",
            "total" if final else "last interval",
            parts or "nothing",
            counts.batches,
            counts.dead_letters,
            len(self._buffer),
        )
        if not final:
            self._counts = Counts()


def _safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


def celery_sender() -> Send:
    """A ``send`` that hands batches to the Celery app by task name."""
    from tasks.app import app

    def send(task: str, queue: str, items: list[list[Any]]) -> None:
        app.send_task(task, args=[items], queue=queue)

    return send

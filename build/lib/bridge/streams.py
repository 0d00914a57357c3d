"""The durable input: Redis Streams read in a consumer group, acknowledged once Celery has them.

Producers ``XADD`` each event to a stream named like the pub/sub channel it would
be published on (``events:order:created``), with the event's JSON in the field
``data`` (``payload`` is accepted too). The bridge finds the streams with
``SCAN MATCH <EVENT_CHANNEL_PATTERN> TYPE stream`` when it starts and every
:data:`DISCOVER_EVERY` seconds, creates the consumer group ``STREAM_GROUP`` on
each (from the first entry, so events added before any bridge ran are read too)
and reads them all with ``XREADGROUP``. The stream's name is the channel: the
category, the task and the dead letters are exactly those of pub/sub.

An entry is acknowledged (``XACK``) only after the sender's ``send`` returned for
the batch that carries it, dead letters included. A bridge that dies leaves its
entries pending; every bridge, when it starts and then every half
``STREAM_CLAIM_IDLE_MS`` (and at least every 10 s), takes over the entries that have
been pending longer than that (``XAUTOCLAIM``) and sends them. An entry can thus
be sent twice (a bridge killed after ``send`` and before ``XACK``, or one that
was only slow); ingestion is idempotent, so it counts once.

Each bridge joins the group under its own consumer name (``<hostname>-<pid>`` by
default), so every restart adds one. A consumer with nothing pending and idle for
ten times ``STREAM_CLAIM_IDLE_MS`` is removed from the group (checked at most
once a minute), atomically: a consumer that still holds an entry is never
removed, since that would drop the entry's pending record.

Backpressure is natural here: while the buffer holds ``BRIDGE_MAX_BUFFER_BYTES``
the reader stops calling ``XREADGROUP`` and the entries wait in Redis.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import defaultdict
from typing import Any, NamedTuple

import orjson
import redis

from analytics.config import Settings, safe_url
from bridge import metrics
from bridge.batching import Send
from bridge.holding import MESSAGE_OVERHEAD, megabytes
from bridge.relay import RECONNECT_BACKOFF_MAX, Bridge
from bridge.spool import Message

log = logging.getLogger("bridge")

#: Seconds between two SCANs for new streams.
DISCOVER_EVERY = 5.0
#: How long one XREADGROUP waits for entries (ms): also how soon a stop is noticed.
BLOCK_MS = 500
#: Fields of an entry that carry the event's JSON, in order of preference.
DATA_FIELDS = (b"data", b"payload")
#: Longest pause between two XAUTOCLAIM rounds.
CLAIM_EVERY_MAX = 10.0
#: A consumer with nothing pending, idle this many times STREAM_CLAIM_IDLE_MS, is removed.
FORGET_AFTER_CLAIM_IDLES = 10
#: Seconds between two looks for such consumers.
FORGET_EVERY = 60.0

#: Remove the consumers of group ARGV[1] on stream KEYS[1], other than ARGV[2], that
#: hold no pending entry and were idle ARGV[3] ms or more; return their names. In
#: one script, so that no entry can be delivered to one between the check and the
#: removal (XGROUP DELCONSUMER drops a consumer's pending entries with it).
_FORGET = """
local removed = {}
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local field = {}
  for i = 1, #consumer, 2 do field[consumer[i]] = consumer[i + 1] end
  if field['name'] ~= ARGV[2] and tonumber(field['pending']) == 0
      and tonumber(field['idle']) >= tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], field['name'])
    table.insert(removed, field['name'])
  end
end
return removed
"""


class Receipt(NamedTuple):
    """How to acknowledge one stream entry once Celery has it."""

    stream: bytes
    entry_id: bytes
    #: Why the entry is a dead letter before any parsing (no data field), else None.
    problem: str | None = None


class ConsumerGroup:
    """This bridge's place in the consumer group: which streams, claims, removals, acks.

    It finds the streams and creates the group on them, takes over the entries
    stopped bridges left pending, removes their consumers once idle with nothing
    pending, and acknowledges what Celery has. The reading stays with
    :class:`StreamBridge`.
    """

    def __init__(self, client: redis.Redis, settings: Settings, consumer: str):
        self._redis = client
        self.pattern = settings.event_channel_pattern
        self.name = settings.stream_group
        self.consumer = consumer
        self.claim_idle_ms = settings.stream_claim_idle_ms
        self.streams: list[bytes] = []
        self._forget = client.register_script(_FORGET)
        self._next_forget = 0.0
        #: Consumers of the group this bridge removed (idle, nothing pending).
        self.forgotten: list[str] = []

    def discover(self) -> None:
        """Find the streams matching the pattern; create the group on the new ones."""
        found = sorted(set(self._redis.scan_iter(match=self.pattern, count=1000, _type="STREAM")))
        for stream in found:
            if stream in self.streams:
                continue
            try:
                # From the first entry: what producers added before any bridge ran counts.
                self._redis.xgroup_create(stream, self.name, id="0", mkstream=True)
                log.info("created consumer group %s on stream %s", self.name, stream.decode())
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            log.info("reading stream %s", stream.decode("utf-8", "replace"))
        self.streams = found

    def claim(
        self, stream: bytes, cursor: bytes, count: int, skip: set[tuple[bytes, bytes]]
    ) -> tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]:
        """One page of the entries of ``stream`` pending over the claim setting, from
        ``cursor``, taken over (those in ``skip`` left be): the next cursor and the entries."""
        reply: Any = self._redis.xautoclaim(
            stream,
            self.name,
            self.consumer,
            self.claim_idle_ms,
            start_id=cursor,
            count=count,
            justid=True,
        )
        cursor, ids = reply[0], reply[1]
        ids = [entry_id for entry_id in ids if (stream, entry_id) not in skip]
        if not ids:
            return cursor, []
        taken: Any = self._redis.xclaim(stream, self.name, self.consumer, 0, ids)
        # An entry deleted from the stream meanwhile comes back without fields.
        return cursor, [entry for entry in taken if entry[1] is not None]

    def forget_idle_consumers(self) -> None:
        """Remove consumers of stopped bridges (nothing pending, idle for long), at most
        every :data:`FORGET_EVERY` seconds."""
        if time.monotonic() < self._next_forget:
            return
        self._next_forget = time.monotonic() + FORGET_EVERY
        idle_ms = FORGET_AFTER_CLAIM_IDLES * self.claim_idle_ms
        for stream in self.streams:
            names = self._forget(keys=[stream], args=[self.name, self.consumer, idle_ms])
            for raw in names:
                name = raw.decode("utf-8", "replace")
                self.forgotten.append(name)
                log.info(
                    "removed consumer %s from group %s on %s: nothing pending, idle over %d ms",
                    name,
                    self.name,
                    stream.decode("utf-8", "replace"),
                    idle_ms,
                )

    def acknowledge(self, receipts: list[Any]) -> None:
        by_stream: defaultdict[bytes, list[bytes]] = defaultdict(list)
        for receipt in receipts:
            by_stream[receipt.stream].append(receipt.entry_id)
        try:
            pipe = self._redis.pipeline(transaction=False)
            for stream, ids in by_stream.items():
                pipe.xack(stream, self.name, *ids)
            pipe.execute()
        except redis.RedisError as exc:
            # Still pending, so claimed and sent again later: counted once all the same.
            log.warning("could not acknowledge %d entries (%s)", len(receipts), exc)


class StreamBridge(Bridge):
    """Reads the streams matching ``settings.event_channel_pattern`` in a consumer group."""

    durable = True

    def __init__(self, settings: Settings, send: Send):
        super().__init__(settings, send)
        self.group = settings.stream_group
        self.consumer = settings.stream_consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.claim_idle_ms = settings.stream_claim_idle_ms
        self.claim_every = min(max(self.claim_idle_ms / 2000, 0.05), CLAIM_EVERY_MAX)
        #: Entries read and not yet acknowledged (or let go): a claim skips them.
        self._in_flight: set[tuple[bytes, bytes]] = set()
        #: Entries this bridge took over from other consumers.
        self.claimed = 0
        self._redis = redis.Redis.from_url(
            settings.redis_url,
            client_name=self.client_name,
            socket_timeout=BLOCK_MS / 1000 + 10,
            socket_connect_timeout=5,
        )
        # The raw reply, so that a claim pages with its cursor (redis-py's parser drops
        # the cursor of a JUSTID claim).
        self._redis.set_response_callback("XAUTOCLAIM", lambda response, **_: response)
        self.consumer_group = ConsumerGroup(self._redis, settings, self.consumer)

    @property
    def streams(self) -> list[bytes]:
        """The streams read, as last discovered."""
        return self.consumer_group.streams

    def pending_entries(self) -> int:
        """Entries of the streams read that the group has delivered and nobody acknowledged
        (XPENDING, every consumer); asked when the metrics are scraped, on a client of its own."""
        client = redis.Redis.from_url(
            self.settings.redis_url, socket_timeout=5, socket_connect_timeout=5
        )
        try:
            pipe = client.pipeline(transaction=False)
            streams = list(self.streams)
            for stream in streams:
                pipe.xpending(stream, self.group)
            return sum(int(reply["pending"]) for reply in pipe.execute())
        finally:
            client.close()

    @property
    def forgotten(self) -> list[str]:
        """Consumers of the group this bridge removed (idle, nothing pending)."""
        return self.consumer_group.forgotten

    # ------------------------------------------------------------------ reader

    def _read_loop(self) -> None:
        pattern = self.settings.event_channel_pattern
        delay = 0.1
        next_discovery = next_claim = 0.0
        throttled_at: float | None = None
        log.info(
            "reading streams matching %s on %s as consumer %s of group %s",
            pattern,
            safe_url(self.settings.redis_url),
            self.consumer,
            self.group,
        )
        while not self._stop.is_set():
            try:
                now = time.monotonic()
                if now >= next_discovery:
                    self.consumer_group.discover()
                    next_discovery = now + DISCOVER_EVERY
                    self._subscribed.set()
                if now >= next_claim:
                    self._claim()
                    next_claim = time.monotonic() + self.claim_every
                held = self.held_bytes
                if held >= self.max_buffer_bytes:
                    if throttled_at is None:
                        throttled_at = time.monotonic()
                        log.warning(
                            "buffer full (%s held, limit %s): Celery is not keeping up; "
                            "reading the streams only as it takes events (the rest wait in Redis)",
                            megabytes(held),
                            megabytes(self.max_buffer_bytes),
                        )
                    self._stop.wait(0.05)
                    continue
                if throttled_at is not None and held < self.max_buffer_bytes // 2:
                    # Reads resume as soon as there is room; the episode ends (one log
                    # line, not one per read) once the buffer is half empty.
                    log.warning(
                        "caught up: the buffer is below half its limit after %.1fs",
                        time.monotonic() - throttled_at,
                    )
                    throttled_at = None
                if not self.streams:
                    self._stop.wait(min(BLOCK_MS / 1000, max(0.0, next_discovery - now)))
                    continue
                self._read()
                delay = 0.1
            except redis.ResponseError as exc:
                if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                    raise
                # A stream (or its group) was deleted: find the streams again.
                log.warning("%s; looking for the streams again", exc)
                self.consumer_group.streams = []
                next_discovery = 0.0
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("lost the Redis connection (%s); retrying in %.1fs", exc, delay)
                if self._subscribed.is_set():  # once per outage, not per failed retry
                    metrics.RECONNECTS.inc()
                self._subscribed.clear()
                self._stop.wait(delay)
                delay = min(delay * 2, RECONNECT_BACKOFF_MAX)

    def _close(self) -> None:
        # After the sender's last acknowledgements, not when the reader stops.
        super()._close()
        self._redis.close()

    def _read(self) -> None:
        replies: Any = self._redis.xreadgroup(
            self.group,
            self.consumer,
            dict.fromkeys(self.streams, ">"),
            count=self.batch_size,
            block=BLOCK_MS,
        )
        received = time.time()
        for stream, entries in replies or ():
            self._take(stream, entries, received)

    def _claim(self) -> None:
        """Take over entries other consumers left pending longer than the claim setting."""
        claimed = 0
        for stream in self.streams:
            cursor = b"0-0"
            while not self._stop.is_set():
                while self.held_bytes >= self.max_buffer_bytes and not self._stop.is_set():
                    self._stop.wait(0.05)
                # Our own entries still in the buffer are on their way: leave them be.
                cursor, entries = self.consumer_group.claim(
                    stream, cursor, self.batch_size, self._in_flight
                )
                if entries:
                    claimed += len(entries)
                    self._take(stream, entries, time.time())
                if cursor == b"0-0":
                    break
        if claimed:
            self.claimed += claimed
            log.warning(
                "claimed %d entries left pending over %d ms by a stopped or stuck bridge",
                claimed,
                self.claim_idle_ms,
            )
        self.consumer_group.forget_idle_consumers()

    def _take(
        self, stream: bytes, entries: list[tuple[bytes, dict[bytes, bytes]]], received: float
    ) -> None:
        """Buffer the entries read from one stream, each with its receipt."""
        messages: list[Message] = []
        size = 0
        for entry_id, fields in entries:
            data = next((fields[name] for name in DATA_FIELDS if name in fields), None)
            problem = None
            if data is None:
                problem = "stream entry has no 'data' or 'payload' field with the event's JSON"
                data = orjson.dumps(
                    {
                        key.decode("utf-8", "replace"): value.decode("utf-8", "replace")
                        for key, value in fields.items()
                    }
                )
            self._in_flight.add((stream, entry_id))
            messages.append((stream, data, received, Receipt(stream, entry_id, problem)))
            size += len(stream) + len(data) + MESSAGE_OVERHEAD
        if messages:
            self._held.keep(messages, size)

    # ------------------------------------------------------------------ sender

    def _acknowledge(self, receipts: list[Any]) -> None:
        self.consumer_group.acknowledge(receipts)
        self._release(receipts)

    def _release(self, receipts: list[Any]) -> None:
        in_flight = self._in_flight
        for receipt in receipts:
            in_flight.discard((receipt.stream, receipt.entry_id))

    def _log_counts(self, final: bool = False) -> None:
        super()._log_counts(final)
        if final and self.claimed:
            log.info("total: %d entries claimed from other consumers", self.claimed)

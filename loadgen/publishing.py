"""The load generator's stream and publisher: what `analytics bench` and the benchmarks send.

It owns:

- **The stream** (:func:`build_stream`): the simulator's realistic mix of all 15
  event types, re-stamped for one run: UUID-shaped event ids unique to the run
  (8 bytes of run key + 8 bytes of the event's index, so a stored id leads back to
  its publish time), tenants named ``<tenant_prefix>-N``, and timestamps spread
  over the publishing window starting now; plus what the database must then hold
  (:class:`Expected`).
- **Publishing** (:func:`publish`): a redis-py pipeline in small chunks paced to a
  rate (0: as fast as possible), recording when each event was sent and how many
  reached no subscriber.

It starts and stops no process and changes nothing in the pipeline;
:mod:`loadgen.checking` measures what the pipeline made of the stream.
"""

from __future__ import annotations

import os
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from analytics.events import channel_for
from loadgen.simulator import Simulator

#: Amounts are stored as integers of 1/10,000 (``analytics.models.Amount``).
AMOUNT_SCALE = 10_000
#: A paced publisher sends one chunk this often (seconds).
CHUNK_SECONDS = 0.005
#: Largest pipeline chunk, also the chunk size at rate 0.
MAX_CHUNK = 1000


# --------------------------------------------------------------------------- stream


@dataclass
class Expected:
    """What the database must hold once a stream is ingested, per tenant."""

    events: Counter[str] = field(default_factory=Counter)
    by_type: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: (tenant, currency) -> order.created events
    orders: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: (tenant, currency) -> sum of order.created total_amount, in 1/10,000
    revenue: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.events.values())

    def add(self, envelope: dict[str, Any], default_currency: str = "USD") -> None:
        """Count one published envelope (as sent: its own tenant, type and data)."""
        tenant, event_type = str(envelope["tenant_id"]), str(envelope["event_type"])
        self.events[tenant] += 1
        self.by_type[tenant, event_type] += 1
        if event_type == "order.created":
            data = envelope.get("data") or {}
            currency = str(data.get("currency") or default_currency).upper()
            self.orders[tenant, currency] += 1
            self.revenue[tenant, currency] += _amount(data["total_amount"])

    @classmethod
    def of(cls, payloads: Iterable[bytes], default_currency: str = "USD") -> Expected:
        """What the database must hold after exactly these serialised envelopes."""
        expected = cls()
        for payload in payloads:
            expected.add(orjson.loads(payload), default_currency)
        return expected


@dataclass
class Stream:
    """One run's events, ready to publish: channel and bytes per event, in order."""

    run_id: str
    key: bytes
    tenants: tuple[str, ...]
    channels: list[str]
    payloads: list[bytes]
    expected: Expected

    def __len__(self) -> int:
        return len(self.payloads)

    def event_id(self, index: int) -> str:
        return str(uuid.UUID(bytes=self.key + index.to_bytes(8, "big")))

    def index_of(self, event_id: str) -> int | None:
        """The position of one of this stream's event ids (None for another id)."""
        digits = event_id.replace("-", "")
        if len(digits) != 32 or digits[:16] != self.key.hex():
            return None
        return int(digits[16:], 16)

    @property
    def size_bytes(self) -> int:
        return sum(map(len, self.payloads))


def simulate(count: int, tenants: int = 3, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` envelopes of the simulator's realistic mix (timestamps are re-stamped later)."""
    start = datetime.now(UTC) - timedelta(minutes=5)
    return list(Simulator(tenants=tenants, seed=seed, start=start, days=1).events(count))


def simulate_replay(
    count: int, tenants: int = 4, users: int = 2_200, days: int = 10, seed: int = 0
) -> list[dict[str, Any]]:
    """``count`` envelopes shaped like a replay: many users per tenant over ``days`` days.

    Re-stamp them with ``build_stream(spread=days * 86400, start=<days ago>)`` to keep
    them spread over past days, as a backfill or a replayed outage sends them.
    """
    start = datetime.now(UTC) - timedelta(days=days)
    simulator = Simulator(
        tenants=tenants, seed=seed, start=start, days=days, users_per_tenant=users
    )
    return list(simulator.events(count))


def _micros(stamp: str) -> int:
    moment = datetime.fromisoformat(stamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000)


def _amount(value: Any) -> int:
    """A JSON amount in 1/10,000, rounded as the store rounds it."""
    return int((Decimal(str(value)) * AMOUNT_SCALE).to_integral_value())


def build_stream(
    envelopes: Sequence[dict[str, Any]],
    *,
    channel_prefix: str,
    tenant_prefix: str | None = None,
    spread: float = 1.0,
    start: datetime | None = None,
    run_id: str | None = None,
    default_currency: str = "USD",
) -> Stream:
    """Re-stamp simulated envelopes for one run and serialise them.

    Each event gets an id unique to the run, its tenant ``tenant-K`` becomes
    ``<tenant_prefix>-K`` (default ``bench-<run_id>``), and the timestamps keep
    their order and relative spacing but are squeezed into ``spread`` seconds
    from ``start`` (default now): events that happen as they are published, as
    in production. Channels are ``<channel_prefix>:<category>:<action>``.
    """
    run_id = run_id or uuid.uuid4().hex[:8]
    key = os.urandom(8)
    tenant_prefix = tenant_prefix or f"bench-{run_id}"
    tenants: dict[str, str] = {}
    for document in envelopes:
        original = str(document["tenant_id"])
        if original not in tenants:
            suffix = original.rsplit("-", 1)[-1]
            name = f"{tenant_prefix}-{suffix if suffix.isdigit() else len(tenants) + 1}"
            tenants[original] = name
    stamps = [_micros(str(document["timestamp"])) for document in envelopes]
    first, last = (min(stamps), max(stamps)) if stamps else (0, 0)
    scale = spread * 1_000_000 / (last - first) if last > first else 0.0
    origin = start or datetime.now(UTC)
    if origin.tzinfo is not None:
        origin = origin.astimezone(UTC).replace(tzinfo=None)
    stream = Stream(run_id, key, tuple(tenants.values()), [], [], Expected())
    expected = stream.expected
    for index, (document, micros) in enumerate(zip(envelopes, stamps, strict=True)):
        event_type = str(document["event_type"])
        tenant = tenants[str(document["tenant_id"])]
        moment = origin + timedelta(microseconds=round((micros - first) * scale))
        envelope = {
            **document,
            "event_id": stream.event_id(index),
            "tenant_id": tenant,
            "timestamp": moment.isoformat(timespec="microseconds") + "Z",
        }
        stream.channels.append(channel_for(event_type, channel_prefix))
        stream.payloads.append(orjson.dumps(envelope))
        expected.add(envelope, default_currency)
    return stream


# -------------------------------------------------------------------------- publish


@dataclass
class Published:
    """When each event of a stream was sent (epoch seconds, by index)."""

    sent_at: array[float]
    started: float
    finished: float
    #: Events that no subscriber received (PUBLISH answered 0): lost before the pipeline.
    unreceived: int = 0
    #: Seconds the publisher waited because ``hold`` asked it to.
    held: float = 0.0
    #: The stream positions of the ``unreceived`` events.
    missed: list[int] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.sent_at)

    @property
    def rate(self) -> float:
        """Events per second actually published."""
        return self.count / max(self.finished - self.started, 1e-9)


def chunk_size(rate: float) -> int:
    """Events per pipeline round trip: a chunk every ~5 ms at ``rate``, at most 1,000."""
    if rate <= 0:
        return MAX_CHUNK
    return max(1, min(MAX_CHUNK, round(rate * CHUNK_SECONDS)))


def _publish_commands(channels: list[str], payloads: list[bytes]) -> bytes:
    """``PUBLISH channel payload`` for each pair, in Redis's wire format, as one buffer."""
    parts = []
    for channel, payload in zip(channels, payloads, strict=True):
        name = channel.encode()
        parts.append(
            b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"
            % (len(name), name, len(payload), payload)
        )
    return b"".join(parts)


def publish(
    client: Any,
    stream: Stream,
    rate: float,
    *,
    chunk: int | None = None,
    hold: Callable[[], bool] | None = None,
    progress: Callable[[int, float], None] | None = None,
    progress_every: float = 2.0,
) -> Published:
    """Publish the stream in order at ``rate`` events/s (0: as fast as possible).

    Each chunk goes in one round trip (its commands encoded beforehand); its
    events' publish time is the moment just before the round trip (so a latency
    includes the publish itself).
    ``hold()`` is asked before each chunk and publishing waits while it is true
    (backpressure, e.g. while a slow subscriber's output buffer is large).
    ``progress(published, elapsed)`` is called every ``progress_every`` seconds.
    """
    total = len(stream)
    size = chunk or chunk_size(rate)
    sent_at = array("d", bytes(8 * total))
    # The PUBLISH commands are encoded before the clock starts: redis-py's pipeline
    # spends ~11 us an event building and parsing them, CPU that producers spend on
    # their own machines and that here would be taken from the pipeline measured
    # (written as one buffer: ~1.4 us an event).
    packed = [
        _publish_commands(
            stream.channels[index : index + size], stream.payloads[index : index + size]
        )
        for index in range(0, total, size)
    ]
    connection = client.connection_pool.get_connection()
    started = time.time()
    origin = last_report = time.monotonic()
    missed: list[int] = []
    held = 0.0
    index = 0
    try:
        for commands in packed:
            if hold is not None and hold():
                waiting = time.monotonic()
                while hold():
                    time.sleep(0.005)
                held += time.monotonic() - waiting
            if rate > 0:
                ahead = origin + index / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            end = min(total, index + size)
            now = time.time()
            connection.send_packed_command([commands], check_health=False)
            replies = [connection.read_response() for _ in range(end - index)]
            sent_at[index:end] = array("d", [now]) * (end - index)
            missed += [index + offset for offset, reply in enumerate(replies) if reply == 0]
            index = end
            if progress is not None and time.monotonic() - last_report >= progress_every:
                last_report = time.monotonic()
                progress(index, last_report - origin)
    except BaseException:
        # Replies may be left unread: the connection cannot be used again.
        connection.disconnect()
        raise
    finally:
        client.connection_pool.release(connection)
    return Published(sent_at, started, time.time(), len(missed), held, missed)

"""Measuring the pipeline from the outside, the way its users see it.

This module owns the measuring, and nothing else: it starts and stops no process
(``benchmarks/pipeline.py`` and ``analytics bench`` do) and changes nothing in the
pipeline. It owns:

- **The stream** (:func:`build_stream`): the simulator's realistic mix of all 15
  event types, re-stamped for one run: UUID-shaped event ids unique to the run
  (8 bytes of run key + 8 bytes of the event's index, so a stored id leads back to
  its publish time), tenants named ``<tenant_prefix>-N``, and timestamps spread
  over the publishing window starting now; plus what the database must then hold
  (:class:`Expected`).
- **Publishing** (:func:`publish`): a redis-py pipeline in small chunks paced to a
  rate (0: as fast as possible), recording when each event was sent and how many
  reached no subscriber.
- **Waiting** (:func:`wait_stored`): polls the database until it holds the
  stream's events, with a timeout and a stall detector.
- **The figures**: :func:`throughput` (first publish -> last ``events.stored_at``),
  :func:`latency` (``stored_at`` - publish time, per event), :func:`check_exact`
  (stored events, per-type event counters, orders and revenue per currency
  against what was published, and no dead letters).
- **Observing processes**: :class:`ClientWatch` samples ``CLIENT LIST`` for a
  subscriber's output buffer (``omem``) and reconnects, :class:`RedisLog` reads
  what Redis logged about closing clients, :func:`tree_peak_rss` reads ``VmHWM``
  of a process and its children (prefork workers) from /proc, and
  :func:`cpu_seconds` / :func:`machine_cpu` say where the CPU went.

Clocks: latency compares this process's clock with the workers' (``stored_at`` is
the worker's UTC time when it wrote the batch). On one machine that is one clock;
across hosts the clocks must be synchronised (NTP), or the figures include the skew.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import signal
import threading
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import BigInteger, DateTime, Engine, Numeric, String, bindparam, text

from analytics.simulate import Simulator, channel_for

#: Amounts are stored as integers of 1/10,000 (``analytics.models.Amount``).
AMOUNT_SCALE = 10_000
#: A paced publisher sends one chunk this often (seconds).
CHUNK_SECONDS = 0.005
#: Largest pipeline chunk, also the chunk size at rate 0.
MAX_CHUNK = 1000

__all__ = [
    "ClientWatch",
    "Exactness",
    "Expected",
    "Latency",
    "Published",
    "RedisLog",
    "Stream",
    "Throughput",
    "WaitResult",
    "all_process_cpu",
    "build_stream",
    "check_exact",
    "children_of",
    "chunk_size",
    "clients_named",
    "commit_lag",
    "count_stored",
    "cpu_seconds",
    "delete_tenants",
    "fetch_stored",
    "kill_processes",
    "latency",
    "machine_cpu",
    "peak_rss",
    "percentile",
    "process_tree",
    "publish",
    "redis_disconnect_counter",
    "simulate",
    "throughput",
    "tree_peak_rss",
    "wait_stored",
]


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


# ----------------------------------------------------------------------------- wait


def _in(sql: str, tenants: Iterable[str]) -> Any:
    return text(sql).bindparams(bindparam("tenants", value=list(tenants), expanding=True))


def count_stored(engine: Engine, tenants: Iterable[str]) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                _in("SELECT count(*) FROM events WHERE tenant_id IN :tenants", tenants)
            ).scalar_one()
        )


@dataclass
class WaitResult:
    """How waiting for a stream's events ended."""

    stored: int
    expected: int
    complete: bool
    reason: str
    waited: float
    #: (epoch time the poll started, events visible then)
    samples: list[tuple[float, int]] = field(default_factory=list)


def wait_stored(
    engine: Engine,
    tenants: Iterable[str],
    expected: int,
    *,
    timeout: float = 300.0,
    stall: float = 30.0,
    interval: float = 0.25,
    progress: Callable[[int, float], None] | None = None,
    progress_every: float = 2.0,
) -> WaitResult:
    """Poll until the database holds ``expected`` events of ``tenants``.

    Gives up after ``timeout`` seconds, or when the count has not grown for
    ``stall`` seconds (events lost or a process stuck: waiting longer shows nothing).
    """
    names = list(tenants)
    begin = last_growth = last_report = time.monotonic()
    samples: list[tuple[float, int]] = []
    previous = -1
    while True:
        polled = time.time()
        stored = count_stored(engine, names)
        samples.append((polled, stored))
        now = time.monotonic()
        if stored != previous:
            previous, last_growth = stored, now
        if progress is not None and now - last_report >= progress_every:
            last_report = now
            progress(stored, now - begin)
        if stored >= expected:
            return WaitResult(stored, expected, True, "complete", now - begin, samples)
        if now - begin > timeout:
            reason = f"timed out after {timeout:.0f}s at {stored}/{expected}"
            return WaitResult(stored, expected, False, reason, now - begin, samples)
        if now - last_growth > stall:
            reason = f"stalled at {stored}/{expected}: no new event for {stall:.0f}s"
            return WaitResult(stored, expected, False, reason, now - begin, samples)
        time.sleep(interval)


# -------------------------------------------------------------------------- figures


def fetch_stored(engine: Engine, tenants: Iterable[str]) -> list[tuple[str, float | None]]:
    """(event_id, stored_at as epoch seconds or None) of every stored event of ``tenants``."""
    query = _in(
        "SELECT event_id, stored_at FROM events WHERE tenant_id IN :tenants", tenants
    ).columns(event_id=String, stored_at=DateTime)
    with engine.connect() as conn:
        return [
            (event_id, stored.replace(tzinfo=UTC).timestamp() if stored is not None else None)
            for event_id, stored in conn.execute(query)
        ]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``values`` (q in 0..100); NaN when empty."""
    if not values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(values)))
    return values[min(rank, len(values)) - 1]


@dataclass
class Throughput:
    """Events stored per second, from the first publish to the last ``stored_at``."""

    events: int
    seconds: float
    per_second: float
    publish_rate: float


def throughput(published: Published, rows: Sequence[tuple[str, float | None]]) -> Throughput:
    stamps = [stored for _, stored in rows if stored is not None]
    if not stamps or not published.count:
        return Throughput(len(stamps), math.nan, math.nan, published.rate)
    seconds = max(stamps) - min(published.sent_at)
    return Throughput(len(stamps), seconds, len(stamps) / max(seconds, 1e-9), published.rate)


@dataclass
class Latency:
    """Publish -> ``stored_at`` per event, in seconds."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float
    min: float
    mean: float
    #: Stored rows whose ``stored_at`` is NULL (written by code that does not set it).
    unstamped: int = 0


def latency(
    stream: Stream, published: Published, rows: Sequence[tuple[str, float | None]]
) -> Latency:
    values: list[float] = []
    unstamped = 0
    for event_id, stored in rows:
        index = stream.index_of(event_id)
        if index is None or index >= published.count:
            continue
        if stored is None:
            unstamped += 1
            continue
        values.append(stored - published.sent_at[index])
    values.sort()
    if not values:
        nan = math.nan
        return Latency(0, nan, nan, nan, nan, nan, nan, unstamped)
    return Latency(
        len(values),
        percentile(values, 50),
        percentile(values, 90),
        percentile(values, 99),
        values[-1],
        values[0],
        sum(values) / len(values),
        unstamped,
    )


def commit_lag(
    rows: Sequence[tuple[str, float | None]], samples: Sequence[tuple[float, int]]
) -> tuple[float, int]:
    """How long rows were written (``stored_at``) before a poll could see them.

    From :func:`wait_stored`'s samples: at each poll, the rows whose ``stored_at``
    had passed minus the rows visible is what was written but not yet committed.
    Returns (the mean lag per event in seconds, the most such rows at one poll):
    an estimate, as fine as the polling interval.
    """
    stamps = sorted(stored for _, stored in rows if stored is not None)
    if not stamps or len(samples) < 2:
        return math.nan, 0
    area = 0.0
    most = 0
    position = 0
    for (moment, visible), (following, _) in itertools.pairwise(samples):
        while position < len(stamps) and stamps[position] <= moment:
            position += 1
        pending = max(0, position - visible)
        most = max(most, pending)
        area += pending * (following - moment)
    return area / len(stamps), most


@dataclass
class Exactness:
    """Whether the aggregates hold exactly what was published."""

    exact: bool
    stored: int
    expected: int
    counted: int
    dead_letters: int
    problems: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        """Published events that are not stored."""
        return max(0, self.expected - self.stored)

    def short(self) -> str:
        """A few words: "exact", or what is lost or wrong."""
        if self.exact:
            return "exact"
        if self.lost:
            share = self.lost / max(self.expected, 1)
            return f"LOST {self.lost:,} of {self.expected:,} events ({share:.0%})"
        return f"NOT exact ({len(self.problems)} mismatches)"

    def summary(self) -> str:
        if self.exact:
            return f"exact ({self.stored} events, counters and revenue match)"
        more = f" (+{len(self.problems) - 3} more)" if len(self.problems) > 3 else ""
        return "NOT exact: " + "; ".join(self.problems[:3]) + more


def _mismatches(
    published: Counter[Any], counted: Counter[Any], describe: Callable[[Any, int, int], str]
) -> list[str]:
    """One line per key whose count differs from what was published."""
    return [
        describe(key, counted[key], published[key])
        for key in sorted(set(published) | set(counted))
        if counted[key] != published[key]
    ]


def check_exact(engine: Engine, stream: Stream) -> Exactness:
    """Compare the stored events and aggregates of the stream's tenants with what it holds.

    Per tenant: stored events == published events; the ``events`` counters per
    event type == published per type; the ``revenue`` counters per currency ==
    order.created count and sum of ``total_amount`` (exact, in 1/10,000); and no
    dead letter names the tenant.
    """
    expected = stream.expected
    tenants = list(stream.tenants)
    problems: list[str] = []
    with engine.connect() as conn:
        stored = Counter(
            {
                tenant: int(n)
                for tenant, n in conn.execute(
                    _in(
                        "SELECT tenant_id, count(*) FROM events WHERE tenant_id IN :tenants "
                        "GROUP BY tenant_id",
                        tenants,
                    )
                )
            }
        )
        counters = Counter(
            {
                (tenant, dimension): int(n)
                for tenant, dimension, n in conn.execute(
                    _in(
                        "SELECT tenant_id, dimension, sum(count) FROM metric_counters "
                        "WHERE metric = 'events' AND tenant_id IN :tenants "
                        "GROUP BY tenant_id, dimension",
                        tenants,
                    ).columns(tenant_id=String, dimension=String, n=BigInteger)
                )
            }
        )
        revenue_rows = conn.execute(
            _in(
                "SELECT tenant_id, dimension, sum(count), sum(total) FROM metric_counters "
                "WHERE metric = 'revenue' AND tenant_id IN :tenants "
                "GROUP BY tenant_id, dimension",
                tenants,
            ).columns(tenant_id=String, dimension=String, n=BigInteger, total=Numeric)
        ).all()
        dead = int(
            conn.execute(
                _in("SELECT count(*) FROM dead_letters WHERE tenant_id IN :tenants", tenants)
            ).scalar_one()
        )
    orders = Counter({(t, c): int(n) for t, c, n, _ in revenue_rows})
    revenue = Counter({(t, c): int(total) for t, c, _, total in revenue_rows})
    problems += _mismatches(
        expected.events, stored, lambda t, got, want: f"{t}: {got} events stored, {want} published"
    )
    problems += _mismatches(
        expected.by_type,
        counters,
        lambda k, got, want: f"{k[0]} {k[1]}: events counter {got}, published {want}",
    )
    problems += _mismatches(
        expected.orders,
        orders,
        lambda k, got, want: f"{k[0]} {k[1]}: {got} orders counted, {want} published",
    )
    problems += _mismatches(
        expected.revenue,
        revenue,
        lambda k, got, want: (
            f"{k[0]} {k[1]}: revenue {Decimal(got) / AMOUNT_SCALE}, "
            f"published {Decimal(want) / AMOUNT_SCALE}"
        ),
    )
    if dead:
        problems.append(f"{dead} dead letter(s) for the run's tenants")
    total_stored = sum(stored.values())
    return Exactness(
        exact=not problems,
        stored=total_stored,
        expected=expected.total,
        counted=sum(counters.values()),
        dead_letters=dead,
        problems=problems,
    )


def delete_tenants(engine: Engine, tenants: Iterable[str]) -> int:
    """Delete every row of ``tenants`` from every table that has a tenant_id; rows deleted."""
    from analytics.models import Base

    names = list(tenants)
    deleted = 0
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            if "tenant_id" in table.c:
                result = conn.execute(table.delete().where(table.c.tenant_id.in_(names)))
                deleted += max(result.rowcount or 0, 0)
    return deleted


# ------------------------------------------------------------------ Redis clients


def clients_named(client: Any, prefix: str) -> list[dict[str, Any]]:
    """``CLIENT LIST`` entries whose name starts with ``prefix``."""
    return [
        entry for entry in client.client_list() if str(entry.get("name", "")).startswith(prefix)
    ]


class ClientWatch:
    """Samples ``CLIENT LIST`` in a thread: a subscriber's largest output buffer, and reconnects.

    A connection Redis closed (output buffer over the pub/sub limit) either
    disappears from the list or comes back with a new client id: both count.
    """

    def __init__(self, client: Any, name_prefix: str, interval: float = 0.1):
        self.client = client
        self.name_prefix = name_prefix
        self.interval = interval
        self.max_omem = 0
        self.max_oll = 0
        self.samples = 0
        self.absent = 0
        self.ids: list[str] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="client-watch", daemon=True)

    def start(self) -> ClientWatch:
        self._thread.start()
        return self

    def stop(self) -> ClientWatch:
        self._stop.set()
        self._thread.join()
        return self

    def __enter__(self) -> ClientWatch:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def sample(self) -> None:
        entries = clients_named(self.client, self.name_prefix)
        self.samples += 1
        if not entries:
            if self.ids:
                self.absent += 1
            return
        for entry in entries:
            self.max_omem = max(self.max_omem, int(entry.get("omem", 0)))
            self.max_oll = max(self.max_oll, int(entry.get("oll", 0)))
            client_id = str(entry.get("id"))
            if client_id not in self.ids:
                self.ids.append(client_id)

    @property
    def disconnected(self) -> bool:
        """Whether the watched connection went away or was replaced while watched."""
        return self.absent > 0 or len(self.ids) > 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # a failed sample must not end the watch
                self.errors += 1
            self._stop.wait(self.interval)


class RedisLog:
    """New lines of the Redis server log since this object was made (when it is readable)."""

    MARKER = "output buffer limits"

    def __init__(self, client: Any):
        self.path: Path | None = None
        self.offset = 0
        try:
            configured = client.config_get("logfile").get("logfile", "")
        except Exception:  # CONFIG may be disabled on a managed Redis
            configured = ""
        if configured:
            path = Path(configured)
            if path.is_file() and os.access(path, os.R_OK):
                self.path = path
                self.offset = path.stat().st_size

    @property
    def readable(self) -> bool:
        return self.path is not None

    def new_lines(self) -> list[str]:
        if self.path is None:
            return []
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            return handle.read().decode("utf-8", "replace").splitlines()

    def buffer_disconnects(self, name_prefix: str) -> list[str]:
        """Lines where Redis closed a client named ``name_prefix...`` for its output buffer."""
        return [
            line
            for line in self.new_lines()
            if self.MARKER in line and f"name={name_prefix}" in line
        ]


def redis_disconnect_counter(client: Any) -> int | None:
    """``client_output_buffer_limit_disconnections`` (Redis 7.4+), None on older servers."""
    value = client.info("stats").get("client_output_buffer_limit_disconnections")
    return None if value is None else int(value)


# ----------------------------------------------------------------------- processes


def _status(pid: int) -> dict[str, str]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split(":", 1) for line in lines if ":" in line)


def children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (from /proc/<pid>/task/*/children, else a scan)."""
    found: list[int] = []
    listed = False
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
            listed = True
        except OSError:
            continue
    if listed:
        return found
    for entry in Path("/proc").iterdir():  # kernels without CONFIG_PROC_CHILDREN
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if fields and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants that are alive."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        if not Path(f"/proc/{current}").exists():
            continue
        tree.append(current)
        pending += children_of(current)
    return tree


def kill_processes(pids: Iterable[int], group: int) -> None:
    """SIGKILL each of ``pids`` still running, then every process of the group ``group``.

    Pass the pids of a tree read before its parent exited: once the parent is gone,
    its children are no longer found under it.
    """
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)


def peak_rss(pid: int) -> int | None:
    """The process's peak resident set size (``VmHWM``) in bytes; None if it is gone."""
    value = _status(pid).get("VmHWM")
    if value is None:
        return None
    return int(value.split()[0]) * 1024


def tree_peak_rss(pid: int) -> dict[int, int]:
    """Peak RSS of ``pid`` and of each of its descendants (prefork pool processes)."""
    peaks: dict[int, int] = {}
    for member in process_tree(pid):
        peak = peak_rss(member)
        if peak is not None:
            peaks[member] = peak
    return peaks


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds the processes used so far (those still alive)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def all_process_cpu() -> dict[int, tuple[str, float]]:
    """pid -> (command name, CPU seconds so far) of every process on the machine."""
    table: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        head, _, rest = raw.rpartition(")")
        fields = rest.split()
        if len(fields) < 13:
            continue
        name = head.split("(", 1)[-1]
        table[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / _TICKS)
    return table


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return (total - idle) / _TICKS, total / _TICKS

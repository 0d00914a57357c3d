"""Measuring the pipeline from the outside, the way its users see it, once a stream was sent.

It owns:

- **Waiting** (:func:`wait_stored`): polls the database until it holds the
  stream's events, with a timeout and a stall detector.
- **The figures**: :func:`throughput` (first publish -> last ``events.stored_at``),
  :func:`latency` (``stored_at`` - publish time, per event), :func:`check_exact`
  (stored events, per-type event counters, orders and revenue per currency
  against what was published, and no dead letters).
- **Cleaning up** (:func:`delete_tenants`): the bench tenants' rows.

Clocks: latency compares this process's clock with the workers' (``stored_at`` is
the worker's UTC time when it wrote the batch). On one machine that is one clock;
across hosts the clocks must be synchronised (NTP), or the figures include the skew.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, Engine, Numeric, String, bindparam, text

from loadgen.publishing import AMOUNT_SCALE, Published, Stream

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

    Per tenant: stored events == published events; the ``events_by_type`` counters
    per event type == published per type; the ``revenue`` counters per currency ==
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
                        "WHERE metric = 'events_by_type' AND tenant_id IN :tenants "
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

"""Reports as history grows: a large tenant's year loaded through the writer, timed at checkpoints.

    python -m benchmarks.scale [--max N] [--checkpoints 500000,2000000,5000000]

Creates a PostgreSQL database of its own (benchmarks/scratch.py; dropped at the end),
and stores the simulator's realistic stream (all 15 event types, one tenant with
``--users`` users, timestamps over ``--days`` days) through the worker's own writer
(``analytics.ingest.apply_events``, ``--batch`` events a transaction: no pub/sub, so
millions take minutes). It prints the load rate and an ETA as it goes, and for each
stretch since the last line the writer's rate while storing and its CPU an event
(its Python, its PostgreSQL backend): whether ingest slows as history grows.

The stream is generated for ``--max`` events, so its events fill the whole period:
at a checkpoint before the end, the tenant's history covers the first part of the
year (the days covered are printed). At every checkpoint it runs ``VACUUM ANALYZE``
(as autovacuum would on a database in use), refreshes the dirty rollups once (as
beat does every few minutes), then times every report over the tenant's whole
history in-process (median of ``--repeat`` runs, milliseconds) beside the target
(<= 100 ms), and prints the storage per event by table (``pg_total_relation_size``,
partitions included) and the WAL the load wrote per event (``pg_current_wal_lsn``,
which is the whole server's: the commits other databases made meanwhile are printed
beside it, so a figure taken on a shared server says so).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.orm import Session

from analytics.db import make_engine
from analytics.events import channel_for, parse
from analytics.ingest import Context, apply_events
from analytics.models import RollupDirtyDay
from analytics.reports import REPORTS, Query, run
from analytics.rollups import refresh_dirty
from benchmarks import procs
from benchmarks.scratch import scratch_database
from loadgen import Simulator

#: The target every report is held to at every checkpoint: median milliseconds.
TARGET_MS = 100.0
TENANT = "tenant-1"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description="Load one tenant's year through the writer and time every report at "
        "checkpoints (0.5 M, 2 M, 5 M events by default), with storage per event by table.",
    )
    parser.add_argument(
        "--checkpoints",
        default="500000,2000000,5000000",
        help="comma-separated event counts at which to time the reports (default: %(default)s)",
    )
    parser.add_argument(
        "--max",
        type=int,
        default=None,
        help="stop after this many events (default: the last checkpoint)",
    )
    parser.add_argument(
        "--days", type=int, default=365, help="days the stream spans (default: %(default)s)"
    )
    parser.add_argument(
        "--users", type=int, default=20000, help="users of the tenant (default: %(default)s)"
    )
    parser.add_argument(
        "--batch", type=int, default=2000, help="events per transaction (default: %(default)s)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="timed runs per report (default: %(default)s)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the database afterwards (its URL is printed)"
    )
    parser.add_argument(
        "--stored-keys",
        type=int,
        default=0,
        help="first store this many event keys (random ids, none of the stream's), as a "
        "deployment that has kept that many events has in its key index and in nothing else: "
        "what that index alone costs the writer (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        points = sorted({int(part) for part in args.checkpoints.split(",") if part.strip()})
    except ValueError:
        parser.error(f"--checkpoints must be comma-separated integers, not {args.checkpoints!r}")
    if not points or points[0] <= 0:
        parser.error("--checkpoints needs at least one positive count")
    args.max = args.max or points[-1]
    if args.stored_keys < 0:
        parser.error("--stored-keys cannot be negative")
    if args.max <= 0 or args.batch <= 0 or args.repeat <= 0 or args.days <= 0 or args.users <= 0:
        parser.error("--max, --batch, --repeat, --days and --users must be positive")
    args.points = [p for p in points if p <= args.max] or [args.max]
    return args


def stream(args: argparse.Namespace) -> Iterator[Any]:
    """The simulator's stream, parsed as the bridge's worker would receive it."""
    simulator = Simulator(
        tenants=1,
        seed=1,
        start=datetime(2025, 12, 1, tzinfo=UTC),
        days=args.days,
        users_per_tenant=args.users,
        products_per_tenant=500,
    )
    received = datetime.now(UTC).replace(tzinfo=None)
    for document in simulator.events(args.max):
        channel = channel_for(document["event_type"], "events")
        yield parse(
            orjson.dumps(document), channel=channel, received_at=received, max_bytes=1 << 20
        )


def store(engine: Engine, batch: list[Any]) -> int:
    with Session(engine) as session, session.begin():
        return apply_events(session, batch, Context()).stored


class WriterMeter:
    """The writer's own cost between two reports: its Python (this process's CPU while
    storing) and its database's backends' CPU, per event, and the events it stored per
    second of storing (the stream's generation not counted). Whether ingest slows as
    history grows shows here, not in the cumulative rate, which averages it away.

    And what the database did for them, per event: WAL bytes and full-page images
    (the server's, so anything else running counts too), and blocks its backends
    read from outside shared buffers (from the OS cache or the disk); and the server's
    checkpoints meanwhile (after each, a page's first change writes the whole page)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.python = self.wall = 0.0
        self.events = 0
        self._server = self._server_now()

    def _server_now(self) -> tuple[float, int, int, int, int]:
        """(backend CPU seconds, WAL position in bytes, full-page images, blocks read,
        checkpoints begun)."""
        with self.engine.connect() as conn:
            pids = conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            ).scalars()
            cpu = procs.cpu_seconds(pids)
            wal, fpi, read, checkpoints = conn.execute(
                text(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint, "
                    "(SELECT wal_fpi FROM pg_stat_wal), "
                    "(SELECT blks_read FROM pg_stat_database WHERE datname = current_database()), "
                    "(SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter)"
                )
            ).one()
            return cpu, int(wal), int(fpi), int(read), int(checkpoints)

    def store(self, batch: list[Any]) -> int:
        wall, cpu = time.perf_counter(), time.process_time()
        stored = store(self.engine, batch)
        self.python += time.process_time() - cpu
        self.wall += time.perf_counter() - wall
        self.events += len(batch)
        return stored

    def report(self) -> str:
        """Since the last report: the events stored, at what rate and cost; then reset."""
        server = self._server_now()
        deltas = (now - then for now, then in zip(server, self._server, strict=True))
        postgres, wal, fpi, read, checkpoints = deltas
        self._server = server
        events = self.events
        line = (
            f"last {events:,}: {events / self.wall:,.0f}/s while storing, python "
            f"{self.python / events * 1e6:,.0f} us and postgres {postgres / events * 1e6:,.0f} "
            f"us an event; WAL {wal / events:,.0f} bytes, {fpi / events:.2f} full pages and "
            f"{read / events:.2f} blocks read an event; {checkpoints:.0f} checkpoints"
        )
        self.python = self.wall = 0.0
        self.events = 0
        return line


def store_keys(engine: Engine, count: int) -> None:
    """Store ``count`` event keys of random ids in ``event_keys``, then checkpoint.

    In key order, so the index is built from left to right (its pages fuller than
    random inserts leave them: a slightly smaller index than a real history's).
    """
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO event_keys (tenant_id, event_id) "
                "SELECT :tenant, gen_random_uuid()::text FROM generate_series(1, :count) ORDER BY 2"
            ),
            {"tenant": TENANT, "count": count},
        )
    with engine.connect() as conn:
        size = conn.execute(text("SELECT pg_total_relation_size('event_keys')")).scalar_one()
    admin = create_engine(engine.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("VACUUM ANALYZE event_keys"))
        conn.execute(text("CHECKPOINT"))
    admin.dispose()
    print(
        f"stored {count:,} event keys first ({size / 2**20:,.0f} MiB) in "
        f"{time.perf_counter() - started:,.0f} s"
    )


def vacuum(url: str) -> None:
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("VACUUM ANALYZE"))
    admin.dispose()


def refresh(engine: Engine) -> tuple[float, int]:
    """Refresh the dirty days (beat's work, here once a checkpoint): seconds, days refreshed."""
    started = time.perf_counter()
    with Session(engine) as session, session.begin():
        dirty = session.execute(select(func.count()).select_from(RollupDirtyDay)).scalar_one()
        refresh_dirty(session)
    return time.perf_counter() - started, int(dirty)


def time_reports(engine: Engine, repeat: int) -> dict[str, float]:
    """Median milliseconds of each report over the tenant's whole history."""
    medians = {}
    for name in REPORTS:
        spent = []
        for _ in range(repeat):
            with Session(engine) as session, session.begin():
                started = time.perf_counter()
                run(session, name, Query(TENANT))
                spent.append((time.perf_counter() - started) * 1000)
        medians[name] = statistics.median(spent)
    return medians


def storage(engine: Engine, events: int) -> dict[str, float]:
    """Bytes per event of each table (indexes, TOAST and partitions included), largest first."""
    with engine.connect() as conn:
        sizes = conn.execute(
            text(
                "SELECT coalesce(pg_partition_root(c.oid), c.oid)::regclass::text, "
                "sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind = 'r' "
                "GROUP BY 1 ORDER BY 2 DESC"
            )
        ).all()
    per_event = {str(table): int(size) / events for table, size in sizes if size / events >= 0.5}
    per_event["(all tables)"] = sum(int(size) for _, size in sizes) / events
    return per_event


class WalMeter:
    """WAL bytes the server wrote while loading (checkpoints' own work excluded)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.bytes = 0
        self.other_commits = 0
        self._mark: tuple[str, int] | None = None

    def _now(self) -> tuple[str, int]:
        with self.engine.connect() as conn:
            lsn = conn.execute(text("SELECT pg_current_wal_lsn()::text")).scalar_one()
            others = conn.execute(
                text(
                    "SELECT coalesce(sum(xact_commit), 0) FROM pg_stat_database "
                    "WHERE datname IS DISTINCT FROM current_database()"
                )
            ).scalar_one()
        return str(lsn), int(others)

    def resume(self) -> None:
        self._mark = self._now()

    def pause(self) -> None:
        if self._mark is None:
            return
        lsn, others = self._now()
        with self.engine.connect() as conn:
            written = conn.execute(
                text("SELECT pg_wal_lsn_diff(CAST(:a AS pg_lsn), CAST(:b AS pg_lsn))"),
                {"a": lsn, "b": self._mark[0]},
            ).scalar_one()
        self.bytes += int(written)
        self.other_commits += others - self._mark[1]
        self._mark = None


def checkpoint(
    url: str, engine: Engine, stored: int, first: Any, last: Any, repeat: int, wal: WalMeter
) -> None:
    wal.pause()
    vacuum(url)
    days = (last.date() - first.date()).days + 1
    print(
        f"\n== checkpoint: {stored:,} events stored, {days} days "
        f"({first:%Y-%m-%d} .. {last:%Y-%m-%d})"
    )
    seconds, dirty = refresh(engine)
    print(f"rollup refresh: {seconds:.1f} s for {dirty:,} dirty days (beat's work since the last)")
    medians = time_reports(engine, repeat)
    print(f"{'report':<18} {'median ms':>10}  target <= {TARGET_MS:.0f} ms")
    for name, ms in medians.items():
        print(f"{name:<18} {ms:>10.1f}  {'ok' if ms <= TARGET_MS else 'OVER'}")
    print(f"{'storage':<22} {'bytes/event':>11}")
    for table, per_event in storage(engine, stored).items():
        print(f"{table:<22} {per_event:>11.0f}")
    print(
        f"{'WAL written by the load':<22} {wal.bytes / stored:>11.0f}  (whole server; "
        f"{wal.other_commits:,} commits in other databases meanwhile)"
    )
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"scale: one tenant, {args.users:,} users, {args.days} days, up to {args.max:,} events; "
        f"checkpoints {', '.join(f'{p:,}' for p in args.points)}; batches of {args.batch}"
    )
    with scratch_database("scale", keep=args.keep) as url:
        engine = make_engine(url)
        try:
            if args.stored_keys:
                store_keys(engine, args.stored_keys)
            consumed, stored, batch, points = 0, 0, [], list(args.points)
            first = last = None
            wal = WalMeter(engine)
            wal.resume()
            started = time.perf_counter()
            report_every = max(args.max // 50, args.batch)
            next_report = report_every
            meter = WriterMeter(engine)
            for event in stream(args):
                batch.append(event)
                consumed += 1
                at = event.timestamp
                first = at if first is None or at < first else first
                last = at if last is None or at > last else last
                if len(batch) < args.batch and consumed < points[0] and consumed < args.max:
                    continue
                stored += meter.store(batch)
                batch = []
                if consumed >= next_report:
                    rate = consumed / (time.perf_counter() - started)
                    eta = (args.max - consumed) / rate
                    print(
                        f"loaded {consumed:,} events ({stored:,} stored), {rate:,.0f}/s, "
                        f"ETA {timedelta(seconds=int(eta))}; {meter.report()}"
                    )
                    sys.stdout.flush()
                    next_report += report_every
                if consumed >= points[0] or consumed >= args.max:
                    load_paused = time.perf_counter()
                    checkpoint(url, engine, stored, first, last, args.repeat, wal)
                    wal.resume()
                    started += time.perf_counter() - load_paused
                    points.pop(0)
                    if not points:
                        break
        finally:
            engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where a worker's time goes, per event and per stage, without Celery or Redis.

    python -m benchmarks.worker_cost [--events N] [--batch N] [--mixed] [--no-freeze]
                                     [--profile out.txt]

Builds the benchmark's realistic stream (all 15 types, 3 tenants), groups it by
event type into batches of ``--batch`` as the bridge does, and runs each batch
through the worker's own code (``tasks.ingest.decode_batch`` then
``analytics.ingest.apply_planned`` in one transaction) against a PostgreSQL
database of its own (created, migrated, dropped). For each stage it prints CPU
microseconds per event: parsing, validation and planning (the handlers and
the check of every row against its columns), the writer's Python side, and the
PostgreSQL backend's own CPU (read from /proc, so run it on the database's host).
CPU time, not wall time, so other load on the machine disturbs the figures little.
After its warm-up it freezes the objects alive, as a worker's pool process does once
set up (analytics.runtime), and prints the time the garbage collector took
(``--no-freeze``: as before that).
``--profile`` writes a cProfile of the whole run (CPU time, not wall time: the
worker waiting on PostgreSQL is not its cost), sorted by own time and by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import statistics
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

from analytics.db import make_engine, session_factory
from analytics.ingest import Context, apply_planned
from analytics.runtime import freeze_startup_objects
from benchmarks import procs
from benchmarks.scratch import scratch_database
from loadgen import publishing


def batches_of(stream: publishing.Stream, size: int, mixed: bool = False) -> list[list[list[Any]]]:
    """The stream in batches of ``size``: by event type as the bridge groups a busy stream,
    or (``mixed``) every type together in arrival order, as its mixed tasks carry a quiet one."""
    groups: dict[str, list[list[Any]]] = defaultdict(list)
    out: list[list[list[Any]]] = []
    now = time.time()
    for channel, payload in zip(stream.channels, stream.payloads, strict=True):
        key = "" if mixed else channel
        group = groups[key]
        group.append([channel, payload.decode(), now])
        if len(group) >= size:
            out.append(groups.pop(key))
    out.extend(group for group in groups.values() if group)
    return out


class CollectorTime:
    """A ``gc.callbacks`` entry: collections and the CPU seconds they took, by generation."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
            return
        generation = info["generation"]
        self.count[generation] += 1
        self.seconds[generation] += time.process_time() - self._started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3, help="runs; the minimum is reported")
    parser.add_argument(
        "--mixed",
        action="store_true",
        help="batches of every event type in arrival order (the bridge's mixed tasks at "
        "everyday rates), not one type each",
    )
    parser.add_argument(
        "--past-months",
        type=int,
        default=0,
        help="first create this many monthly partitions of ``events`` before the current "
        "month (empty), as a deployment that keeps that much history has: what each "
        "partition costs an insert",
    )
    parser.add_argument(
        "--no-freeze",
        action="store_true",
        help="leave the objects alive after the warm-up to the garbage collector's full "
        "collections, as the worker did before it froze them (analytics.runtime)",
    )
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()

    with scratch_database("worker_cost") as url:
        return _measure(args, url)


def _measure(args: argparse.Namespace, url: str) -> int:
    engine = None
    try:
        os.environ["DATABASE_URL"] = url
        from tasks.ingest import decode_batch

        engine = make_engine(url)
        sessions = session_factory(engine)
        if args.past_months:
            with sessions.begin() as session:
                made = _past_partitions(session, args.past_months)
            print(f"{made} monthly partitions of events before this month created")
        ctx = Context()
        envelopes = publishing.simulate(args.events + 5_000, seed=1)
        warm = publishing.build_stream(envelopes[:5_000], channel_prefix="events")
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        for batch in batches_of(warm, args.batch, args.mixed):
            planned, _ = decode_batch(batch, ctx)
            with sessions.begin() as session:
                apply_planned(session, planned)

        if not args.no_freeze:  # as the worker's pool process does once set up
            freeze_startup_objects("worker_cost")
        collections = CollectorTime()
        gc.callbacks.append(collections)
        profiler = cProfile.Profile(time.process_time) if args.profile else None
        executes = [0]
        event.listen(
            engine, "before_cursor_execute", lambda *_: executes.__setitem__(0, executes[0] + 1)
        )
        batches = 0
        runs: list[dict[str, float]] = []
        n = args.events
        for _ in range(args.repeat):
            # The same events under new ids and tenants: every run inserts afresh.
            stream = publishing.build_stream(envelopes[5_000:], channel_prefix="events")
            stages = {"parse + plan": 0.0, "apply (python)": 0.0, "postgres backend": 0.0}
            wall_start = time.perf_counter()
            for batch in batches_of(stream, args.batch, args.mixed):
                batches += 1
                if profiler:
                    profiler.enable()
                t0 = time.process_time()
                planned, _ = decode_batch(batch, ctx)
                t1 = time.process_time()
                b0 = procs.cpu_seconds([pid])
                with sessions.begin() as session:
                    apply_planned(session, planned)
                t2 = time.process_time()
                stages["postgres backend"] += procs.cpu_seconds([pid]) - b0
                if profiler:
                    profiler.disable()
                stages["parse + plan"] += t1 - t0
                stages["apply (python)"] += t2 - t1
            stages["wall"] = time.perf_counter() - wall_start
            stages["total CPU"] = sum(v for k, v in stages.items() if k != "wall")
            runs.append(stages)
        gc.callbacks.remove(collections)
        shape = "every type together" if args.mixed else "one type each"
        print(
            f"{n} events in batches of {args.batch} ({shape}), {args.repeat} runs; "
            "us/event: min (median)"
        )
        for stage in runs[0]:
            values = sorted(run[stage] / n * 1e6 for run in runs)
            print(f"  {stage:<18} {values[0]:7.1f} ({statistics.median(values):7.1f})")
        best = min(run["total CPU"] for run in runs) / n
        print(f"  ceiling for worker + database alone on 2 cores: {2 / best:,.0f} events/s")
        per_event = 1e6 / (n * args.repeat)
        print(
            f"  garbage collection   {collections.seconds[2] * per_event:7.1f} us/event "
            f"in {collections.count[2]} full collections, "
            f"{sum(collections.seconds[:2]) * per_event:.1f} in "
            f"{sum(collections.count[:2])} young ones"
            + (" (objects alive after the warm-up not frozen)" if args.no_freeze else "")
        )
        # Statements sent through SQLAlchemy or on its connection's cursor (several in one
        # string count once, a COPY once: before db.on_driver_cursor a COPY was not
        # counted; BEGIN and COMMIT are not): the round trips a batch costs.
        print(f"  statements a batch: {executes[0] / batches:.1f} ({batches} batches)")
        with engine.connect() as conn:
            for table, rows in conn.execute(
                text(
                    "SELECT relname, n_tup_ins + n_tup_upd FROM pg_stat_user_tables ORDER BY 2 DESC"
                )
            ):
                if rows:
                    per_event = rows / (n * args.repeat + len(warm))
                    print(f"    {table:<22} {per_event:.2f} rows written/event")
        if profiler and args.profile:
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("tottime").print_stats(40)
            stats.sort_stats("cumulative").print_stats(60)
            args.profile.write_text(out.getvalue())
            print(f"profile written to {args.profile}")
    finally:
        if engine is not None:
            engine.dispose()
    return 0


def _past_partitions(session: Any, months: int) -> int:
    """Create ``months`` monthly partitions of ``events`` before the current month."""
    from analytics.retention import ensure_partitions

    now = datetime.now(UTC)
    first = now.year * 12 + now.month - 1 - months  # months since year 0, zero-based
    start = datetime(first // 12, first % 12 + 1, 1)
    return len(ensure_partitions(session, start, months).created)


if __name__ == "__main__":
    raise SystemExit(main())

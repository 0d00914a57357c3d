"""Raw events through COPY or as arrays: the writer's CPU and PostgreSQL's, batch by batch.

    python -m benchmarks.raw_rows [--batch N ...] [--events N]

The writer stores a batch's raw events either through COPY into a temporary staging
table (from ``analytics.db.COPY_MIN_ROWS`` events) or, below that, as arrays, the
payloads as one JSON array (``analytics.db.Unnest``). This runs the benchmark's
realistic stream (all 15 types, 3 tenants; every type together, as the bridge's mixed
tasks carry a quiet stream, or with ``--by-type`` one type a batch, as it sends a busy
one; with ``--window`` too, as a bridge behind at peak sends them) through the worker's
own code twice, into two databases of its own (created, migrated, dropped): each batch
once with COPY and once as arrays, the order alternating from batch to batch, so that
the machine's speed, which drifts by tens of percent within minutes here, weighs on
both ways alike. For each ``--batch`` size it prints the CPU microseconds an event of
the writer's Python (the whole transaction: aggregates too, the same both ways) and of
the PostgreSQL backend (from /proc/<pid>/schedstat, in nanoseconds: run it on the
database's host), each way.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from sqlalchemy import text

from analytics import db
from benchmarks.scratch import scratch_database
from benchmarks.worker_cost import batches_of
from loadgen import publishing

#: The two ways, by the value of COPY_MIN_ROWS that forces each.
WAYS = {"COPY": 1, "arrays": 1_000_000_000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[96, 150, 300], help="batch sizes (96 150 300)"
    )
    parser.add_argument("--events", type=int, default=20_000, help="events a batch size")
    parser.add_argument("--warm", type=int, default=3_000, help="events first, not counted")
    parser.add_argument(
        "--by-type",
        action="store_true",
        help="batches of one event type each, as the bridge sends a busy stream's",
    )
    parser.add_argument(
        "--window",
        type=int,
        default=0,
        help="with --by-type: each run of this many events split by type, every type's "
        "events one batch (up to --batch), as a bridge behind at peak sends them: many "
        "full batches and the rare types' small ones",
    )
    args = parser.parse_args(argv)
    print(
        f"{args.events:,} events a batch size, each batch both ways, order alternating; "
        "CPU us an event"
    )
    print(f"  {'batch':>6} {'way':<7} {'python':>8} {'postgres':>9} {'sum':>8}")
    for size in args.batch:
        figures = _measure(size, args.events, args.warm, not args.by_type, args.window)
        for way, (python, postgres) in figures.items():
            print(f"  {size:>6} {way:<7} {python:>8.1f} {postgres:>9.1f} {python + postgres:>8.1f}")
    return 0


def _measure(
    size: int, events: int, warm: int, mixed: bool, window: int
) -> dict[str, tuple[float, float]]:
    saved = db.COPY_MIN_ROWS
    with ExitStack() as stack:
        urls = {way: stack.enter_context(scratch_database(f"raw_rows_{way}")) for way in WAYS}
        os.environ.setdefault("DATABASE_URL", urls["COPY"])
        from analytics.ingest import Context, apply_planned
        from tasks.ingest import decode_batch

        engines = {way: db.make_engine(url) for way, url in urls.items()}
        for engine in engines.values():
            stack.callback(engine.dispose)
        stack.callback(setattr, db, "COPY_MIN_ROWS", saved)
        sessions = {way: db.session_factory(engine) for way, engine in engines.items()}
        pids = {}
        for way, engine in engines.items():
            with engine.connect() as connection:
                pids[way] = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        ctx = Context()
        envelopes = publishing.simulate(warm + events, seed=1)
        for part in (envelopes[:warm], envelopes[warm:]):  # the last part is counted
            totals = {way: [0.0, 0.0] for way in WAYS}
            stream = publishing.build_stream(part, channel_prefix="events")
            for n, batch in enumerate(_batches(stream, size, mixed, window)):
                for way in _ways(n):
                    db.COPY_MIN_ROWS = WAYS[way]
                    planned, _ = decode_batch(batch, ctx)
                    backend = _on_cpu(pids[way])
                    start = time.thread_time()
                    with sessions[way].begin() as session:
                        apply_planned(session, planned)
                    totals[way][0] += time.thread_time() - start
                    totals[way][1] += _on_cpu(pids[way]) - backend
        return {
            way: (python / events * 1e6, pg / events * 1e6) for way, (python, pg) in totals.items()
        }


def _batches(
    stream: publishing.Stream, size: int, mixed: bool, window: int
) -> list[list[list[Any]]]:
    if mixed or not window:
        return batches_of(stream, size, mixed=mixed)
    batches: list[list[list[Any]]] = []
    for start in range(0, len(stream.channels), window):
        part = dataclasses.replace(
            stream,
            channels=stream.channels[start : start + window],
            payloads=stream.payloads[start : start + window],
        )
        batches += batches_of(part, size)
    return batches


def _ways(n: int) -> Iterator[str]:
    names = list(WAYS)
    return iter(names if n % 2 == 0 else reversed(names))


def _on_cpu(pid: int) -> float:
    """Seconds the process has run on a CPU (schedstat: nanoseconds, not 10 ms ticks)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


if __name__ == "__main__":
    raise SystemExit(main())

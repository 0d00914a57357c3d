"""The warehouse sink's throughput: rows/s into a BigQuery REST server, beside the pipeline's rate.

    python -m benchmarks.warehouse [--events N] [--batch N ...]

Creates a PostgreSQL database of its own (migrated, dropped afterwards), stores
``--events`` simulated events of all 15 types in ``events`` as the workers do,
starts the tests' BigQuery server (``tests/warehouse/bigquery_server.py``) in a
process of its own on loopback, and runs the sink (:func:`analytics.warehouse.deliver`,
the real ``google-cloud-bigquery`` client, insertIds, the fence, the mark committed
per batch) until everything is delivered, once per ``--batch`` size. It prints rows/s
and the sink's CPU per row beside the pipeline's measured sustained rate. The
server checks every row against the schema and keeps it: a real BigQuery adds
network latency per request (tens of ms), which larger batches amortise.
"""

from __future__ import annotations

import argparse
import cProfile
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from sqlalchemy import insert, text

from analytics.config import Settings
from analytics.db import make_engine, session_factory
from analytics.models import StoredEvent, WarehouseSink
from analytics.warehouse import deliver
from analytics.warehouse.bigquery import BigQueryTable
from benchmarks import procs
from benchmarks.scratch import scratch_database
from loadgen import publishing

#: The pipeline's sustained rate, measured by benchmarks/pipeline.py (docs/performance.md).
PIPELINE_EVENTS_PER_S = 11_602


def _rows(envelopes: list[dict]) -> list[dict]:
    now = datetime.utcnow()
    rows = []
    for e in envelopes:
        when = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).replace(tzinfo=None)
        rows.append(
            {
                "tenant_id": e["tenant_id"],
                "event_id": e["event_id"],
                "event_type": e["event_type"],
                "known": True,
                "user_id": e.get("user_id"),
                "occurred_at": when,
                "received_at": now,
                "stored_at": now,
                "channel": "events:" + e["event_type"].replace(".", ":"),
                "payload": e,
                "event_id_derived": False,
                "timestamp_derived": False,
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, nargs="+", default=[500, 2000])
    parser.add_argument(
        "--no-checks",
        action="store_true",
        help="the server only deduplicates (no schema check per row): the sink's own rate",
    )
    parser.add_argument("--profile", type=Path, help="write a cProfile of the sink's runs")
    args = parser.parse_args()

    with scratch_database("warehouse_bench") as url:
        return _measure(args, url)


def _measure(args: argparse.Namespace, url: str) -> int:
    name = url.rsplit("/", 1)[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.warehouse.bigquery_server",
            *(["--no-checks"] if args.no_checks else []),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    engine = None
    try:
        endpoint = server.stdout.readline().strip()  # type: ignore[union-attr]
        engine = make_engine(url)
        sessions = session_factory(engine)
        rows = _rows(publishing.simulate(args.events, tenants=3, seed=7))
        with sessions.begin() as session:
            for start in range(0, len(rows), 5_000):
                session.execute(insert(StoredEvent), rows[start : start + 5_000])
        checks = "no row checks" if args.no_checks else "every row checked against the schema"
        print(f"{args.events} simulated events (all 15 types, 3 tenants) in PostgreSQL")
        print(f"BigQuery test server in its own process ({checks})")
        print(f"pipeline sustained rate (benchmarks/pipeline.py): {PIPELINE_EVENTS_PER_S:,} ev/s")
        for batch in args.batch:
            settings = Settings(
                database_url=url,
                warehouse="bigquery",
                bigquery_project="bench",
                bigquery_dataset="analytics",
                bigquery_table=f"events_{batch}",
                bigquery_api_endpoint=endpoint,
                warehouse_batch=batch,
            )
            table = BigQueryTable(settings)
            table.ensure()
            with engine.connect() as conn:
                backends = [
                    int(pid)
                    for (pid,) in conn.execute(
                        text("SELECT pid FROM pg_stat_activity WHERE datname = :n"), {"n": name}
                    )
                ]
            others0 = procs.cpu_seconds([server.pid]), procs.cpu_seconds(backends)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            profiler = cProfile.Profile() if args.profile else None
            if profiler:
                profiler.enable()
            run = deliver(sessions, settings, table, budget=3600)
            if profiler:
                profiler.disable()
                profiler.dump_stats(f"{args.profile}.{batch}")
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            served = procs.cpu_seconds([server.pid]) - others0[0]
            database = procs.cpu_seconds(backends) - others0[1]
            with sessions.begin() as session:
                sink = session.get(WarehouseSink, settings.warehouse_sink)
                assert sink is not None
                assert sink.rows_delivered == args.events, (sink.rows_delivered, run)
            rate = run.sent / wall
            per_row = (cpu + database) / run.sent
            print(
                f"batch {batch:>5}: {run.sent} rows in {wall:.1f} s = {rate:,.0f} rows/s "
                f"({rate / PIPELINE_EVENTS_PER_S:.2f}x the pipeline), {run.batches} requests"
            )
            print(
                f"             CPU us/row: sink {cpu / run.sent * 1e6:.0f}, its PostgreSQL "
                f"{database / run.sent * 1e6:.0f}, test server {served / run.sent * 1e6:.0f}; "
                f"sink + database alone: {1 / per_row:,.0f} rows/s a core "
                f"({1 / per_row / PIPELINE_EVENTS_PER_S:.1f}x the pipeline)"
            )
    finally:
        server.terminate()
        server.wait()
        if engine is not None:
            engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The raw store on a large table: converting it to partitions, pruning it, exporting it.

    python -m benchmarks.retention [--rows 10000000] [--months 6] [--export-days 7] [--keep]

In a scratch PostgreSQL database of its own (created, dropped unless ``--keep``):

1. migrates to revision 0008 (``events`` not partitioned) and generates ``--rows``
   events in SQL with ``generate_series`` (10 tenants, order-like payloads of ~450
   bytes, event times spread evenly over the last ``--months`` months);
2. prints the storage per event (table, TOAST and indexes) before;
3. runs migration 0009 (the conversion) and prints its time and how long the
   ACCESS EXCLUSIVE lock on ``events`` stopped a probe that reads the table every
   50 ms (the longest a reader or writer waited), then the storage per event after;
4. prunes with ``--older-than 90d`` (``analytics.retention.prune``) and prints its
   time and what it dropped;
5. runs ``analytics export`` (jsonl, then parquet) over ``--export-days`` days of every
   tenant as a child process and prints its rate and peak RSS.

The figures go to stdout; keep them in benchmarks/results/.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from analytics.db import make_engine
from analytics.migrations import alembic_config
from analytics.retention import parse_age, prune

ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)

GENERATE = """
INSERT INTO events (tenant_id, event_id, event_type, known, user_id, occurred_at, received_at,
                    stored_at, channel, response_time_ms, event_id_derived, timestamp_derived,
                    payload)
SELECT 'tenant-' || (n % 10), md5(n::text), 'order.created', true, 'user-' || (n % 50000),
       t, t, t, 'events:order:created', NULL, false, false,
       json_build_object(
         'event_id', md5(n::text), 'event_type', 'order.created',
         'tenant_id', 'tenant-' || (n % 10),
         'user_id', 'user-' || (n % 50000), 'timestamp', to_char(t, 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
         'data', json_build_object(
           'order_id', 'order-' || n, 'customer_id', 'customer-' || (n % 50000),
           'total_amount', round((n % 10000) / 100.0, 2), 'currency', 'USD',
           'location_id', 'store-' || (n % 20),
           'items', json_build_array(
             json_build_object('product_id', 'product-' || (n % 500), 'sku', 'SKU-' || (n % 500),
                               'name', 'Product ' || (n % 500), 'quantity', 1 + n % 3,
                               'unit_price', 19.99, 'total_price', 19.99 * (1 + n % 3)))),
         'metadata', json_build_object('source', 'checkout-service', 'version', '1.4.2'))
FROM (
  SELECT n, :start + (:span * (n::float8 / :rows)) AS t FROM generate_series(:first, :last) AS n
) AS g
"""


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def storage(engine: object, rows: int) -> str:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        kind = conn.execute(text("SELECT relkind FROM pg_class WHERE relname = 'events'")).scalar()
        if kind == "p":
            total = conn.execute(
                text(
                    "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits "
                    "WHERE inhparent = 'events'::regclass"
                )
            ).scalar()
        else:
            total = conn.execute(text("SELECT pg_total_relation_size('events')")).scalar()
    total = int(total or 0)
    return f"{total / 2**30:.2f} GiB for {rows:,} events: {total / max(rows, 1):,.0f} bytes/event"


class LockProbe(threading.Thread):
    """Reads ``events`` every 50 ms from its own connection; records the longest wait."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.engine = create_engine(url, isolation_level="AUTOCOMMIT")
        self.longest = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        with self.engine.connect() as conn:
            while not self.stop.is_set():
                started = time.monotonic()
                conn.execute(text("SELECT id FROM events LIMIT 1")).all()
                self.longest = max(self.longest, time.monotonic() - started)
                time.sleep(0.05)

    def finish(self) -> float:
        self.stop.set()
        self.join()
        self.engine.dispose()
        return self.longest


def export_run(url: str, fmt: str, since: date, until: date) -> str:
    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "DATABASE_URL": url}
        started = time.monotonic()
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        done = subprocess.run(
            [sys.executable, "-m", "analytics", "export", "--since", str(since), "--until",
             str(until), "--format", fmt, "--out", out, "--quiet"],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        elapsed = time.monotonic() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if done.returncode != 0:
            return f"export {fmt} failed: {done.stderr.strip()}"
        files = list(Path(out).rglob("*.*"))
        size = sum(f.stat().st_size for f in files)
        events = int(done.stdout.split()[1].replace(",", ""))
        note = "" if peak > before else " (peak of an earlier child: this one was lower)"
        return (
            f"export {fmt}: {events:,} events in {elapsed:.1f}s ({events / elapsed:,.0f}/s), "
            f"{len(files)} files, {size / 2**20:,.0f} MiB, peak RSS {peak / 1024:,.0f} MiB{note}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--months", type=int, default=6, help="event times span this many months")
    parser.add_argument("--export-days", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument(
        "--reuse",
        metavar="DATABASE",
        help="a database a --keep run left at revision 0008 with its rows: skip generating",
    )
    args = parser.parse_args()
    from alembic import command

    name = args.reuse or f"retention_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    if not args.reuse:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    engine = make_engine(url)
    try:
        config = alembic_config(url)
        command.upgrade(config, "0008")
        now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        start = now - timedelta(days=30 * args.months)
        doing = "reusing" if args.reuse else "generating"
        say(f"database {name}; {doing} {args.rows:,} events from {start:%Y-%m-%d} to {now}")
        began = time.monotonic()
        step = 1_000_000
        for first in range(1, 0 if args.reuse else args.rows + 1, step):
            with engine.begin() as conn:
                conn.execute(
                    text(GENERATE),
                    {
                        "start": start,
                        "span": now - start,
                        "rows": args.rows,
                        "first": first,
                        "last": min(first + step - 1, args.rows),
                    },
                )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE events"))
        say(f"generated in {time.monotonic() - began:.0f}s")
        say(f"storage before (one table): {storage(engine, args.rows)}")

        probe = LockProbe(url)
        probe.start()
        time.sleep(0.2)
        began = time.monotonic()
        command.upgrade(config, "0009")
        took = time.monotonic() - began
        time.sleep(0.2)
        waited = probe.finish()
        say(
            f"migration 0009 (conversion to monthly partitions): {took:.1f}s; "
            f"a reader of events waited at most {waited:.1f}s (ACCESS EXCLUSIVE held that long)"
        )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE events"))
        say(f"storage after (partitions): {storage(engine, args.rows)}")

        began = time.monotonic()
        with Session(engine) as session, session.begin():
            result = prune(session, parse_age("90d"), now)
        took = time.monotonic() - began
        say(
            f"prune --older-than 90d: {took:.2f}s; dropped {len(result.dropped)} partitions "
            f"({', '.join(result.dropped)}), {result.events:,} events"
        )
        with engine.connect() as conn:
            left = conn.execute(text("SELECT count(*) FROM events")).scalar() or 0
        say(f"storage after prune: {storage(engine, left)}")

        until = now.date() - timedelta(days=1)
        since = until - timedelta(days=args.export_days - 1)
        for fmt in ("jsonl", "parquet"):
            say(export_run(url, fmt, since, until))
    finally:
        engine.dispose()
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())

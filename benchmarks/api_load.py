"""The HTTP API under load: each report endpoint with concurrent keep-alive clients.

    python -m benchmarks.api_load [--events N] [--days D] [--clients C] [--requests R]

Creates a PostgreSQL database of its own (migrated, dropped at the end), seeds it with
the simulator's realistic stream (``--events`` events of all 15 types over ``--days``
days for ``--tenants`` tenants) through the worker's own writer (then ``VACUUM
ANALYZE``, as autovacuum would have run on a database in use), starts the real
``analytics serve`` process on a free port, creates an API key for ``tenant-1``, and
for each report endpoint (the last ``--range-days`` days, as a dashboard asks):

- one cold request (the first one materialises the DAU/WAU/MAU rollups of the dirty
  days, as the first request after a burst of events would), then ``--clients``
  warm-up requests;
- ``--requests`` requests from ``--clients`` threads, each on its own keep-alive
  connection, measured from sending to the last byte read.

It prints p50/p95/p99 and requests/s per endpoint beside the target (p95 <= 50 ms),
the server's own mean time per report (``analytics_api_report_duration_seconds``
from its /metrics: the query and rendering, without the waiting), the CPU each
request cost the server process, its PostgreSQL backends and this client (read from
/proc: run it on the database's host), and the machine's load average before and
after, since other processes on the machine share its cores.
Every answer must be 200 with a JSON array; anything else fails the run.
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import io
import os
import pstats
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from analytics.db import make_engine
from analytics.events import channel_for, parse
from analytics.ingest import Context, apply_events
from analytics.keys import create_key
from analytics.reports import REPORTS, run
from analytics.reports import Query as ReportQuery
from benchmarks import procs
from benchmarks.scratch import scratch_database
from loadgen import Simulator

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
#: The target each endpoint is held to: p95 latency in milliseconds.
TARGET_P95_MS = 50.0
#: Events the writer stores per transaction while seeding (the bridge's batch size).
SEED_BATCH = 500


def seed(url: str, events: int, days: int, tenants: int) -> tuple[int, datetime, datetime]:
    """Store the simulator's stream through the writer; (events stored, first, last day)."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    simulator = Simulator(
        tenants=tenants,
        seed=1,
        start=today - timedelta(days=days),
        days=days,
        users_per_tenant=2000,
        products_per_tenant=200,
    )
    received = datetime.now(UTC).replace(tzinfo=None)
    engine = make_engine(url)
    stored = 0
    batch = []
    try:
        for document in simulator.events(events):
            channel = channel_for(document["event_type"], "events")
            batch.append(
                parse(
                    orjson.dumps(document), channel=channel, received_at=received, max_bytes=1 << 20
                )
            )
            if len(batch) == SEED_BATCH:
                stored += _store(engine, batch)
                batch = []
        if batch:
            stored += _store(engine, batch)
    finally:
        engine.dispose()
    # Statistics, as autovacuum keeps them on a database in use: without them the planner
    # guesses one row everywhere and some reports took twice as long.
    analyze = create_engine(url, isolation_level="AUTOCOMMIT")
    with analyze.connect() as conn:
        conn.execute(text("VACUUM ANALYZE"))
    analyze.dispose()
    return stored, simulator.start, simulator.end - timedelta(days=1)


def _store(engine: Any, events: list[Any]) -> int:
    with Session(engine) as session, session.begin():
        return apply_events(session, events, Context()).stored


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def server(url: str, port: int, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The real ``analytics serve`` on ``port``, stopped (SIGINT, then SIGKILL) on the way out."""
    env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": REDIS_URL}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "analytics", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise SystemExit(f"analytics serve exited: {log_path.read_text()[-2000:]}")
            try:
                status, _ = get(http.client.HTTPConnection("127.0.0.1", port), "/healthz")
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("analytics serve did not answer /healthz within 60 s")
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def get(
    conn: http.client.HTTPConnection, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    conn.request("GET", path, headers=headers or {})
    reply = conn.getresponse()
    return reply.status, reply.read()


def checked(status: int, body: bytes, path: str) -> int:
    """The number of rows of a report's answer; the run fails on anything but a JSON array."""
    if status != 200:
        raise SystemExit(f"GET {path} answered {status}: {body[:300]!r}")
    rows = orjson.loads(body)
    if not isinstance(rows, list):
        raise SystemExit(f"GET {path} answered no JSON array: {body[:300]!r}")
    return len(rows)


def hammer(
    port: int, path: str, key: str, clients: int, requests: int
) -> tuple[list[float], float]:
    """``requests`` GETs of ``path`` from ``clients`` threads; (latencies in s, wall seconds)."""
    headers = {"Authorization": f"Bearer {key}"}
    share = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []
    start = threading.Barrier(clients + 1)

    def client(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = latencies[index]
        try:
            get(conn, "/healthz")  # connect before the clock starts
            start.wait()
            for _ in range(share[index]):
                began = time.perf_counter()
                status, body = get(conn, path, headers)
                mine.append(time.perf_counter() - began)
                if status != 200:
                    failures.append(f"{status}: {body[:200]!r}")
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    if failures:
        raise SystemExit(f"GET {path}: {len(failures)} failed, first: {failures[0]}")
    return [value for mine in latencies for value in mine], wall


def backends(url: str) -> tuple[list[int], int]:
    """The PostgreSQL backends connected to ``url``'s database (the server's pool), and how
    many connections were ever made to it (``pg_stat_database.sessions``, PostgreSQL 14+)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            pids = conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalars()
            sessions = conn.execute(
                text("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
            ).scalar()
            return list(pids), int(sessions or 0)
    finally:
        engine.dispose()


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def report_means(port: int) -> dict[str, float]:
    """Mean seconds per report as the server measured it (its /metrics)."""
    _, body = get(http.client.HTTPConnection("127.0.0.1", port), "/metrics")
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        if family.name != "analytics_api_report_duration_seconds":
            continue
        for sample in family.samples:
            name = sample.labels.get("report", "")
            if sample.name.endswith("_sum"):
                sums[name] = sample.value
            elif sample.name.endswith("_count"):
                counts[name] = sample.value
    return {name: sums[name] / counts[name] for name in sums if counts.get(name)}


@dataclass
class Result:
    """One endpoint's run: what the clients saw and what it cost."""

    name: str
    rows: int
    cold: float
    latencies: list[float]
    wall: float
    cpu_ms: tuple[float, float, float]  # per request: server, its PostgreSQL backends, client
    connections: int  # made to the database during the run

    @property
    def p95(self) -> float:
        return quantile(self.latencies, 0.95) * 1000


def measure(
    url: str, port: int, pid: int, key: str, name: str, query: str, clients: int, requests: int
) -> Result:
    """One cold request, ``clients`` warm-up requests, then the measured run."""
    path = f"/api/v1/reports/{name}?{query}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    auth = {"Authorization": f"Bearer {key}"}
    began = time.perf_counter()
    rows = checked(*get(conn, path, auth), path)
    cold = time.perf_counter() - began
    for _ in range(clients):
        checked(*get(conn, path, auth), path)
    conn.close()
    pids, sessions = backends(url)
    before = (procs.cpu_seconds([pid]), procs.cpu_seconds(pids), time.process_time())
    latencies, wall = hammer(port, path, key, clients, requests)
    after = (procs.cpu_seconds([pid]), procs.cpu_seconds(pids), time.process_time())
    # A backend that exited took its CPU time with it: the connections made during the
    # run say whether that happened (each one a fork on the database's side).
    connections = backends(url)[1] - sessions - 1
    server, database, client = (
        max(end - start, 0.0) / len(latencies) * 1000
        for start, end in zip(before, after, strict=True)
    )
    return Result(name, rows, cold, latencies, wall, (server, database, client), connections)


def print_table(results: list[Result], means: dict[str, float]) -> None:
    header = (
        f"{'report':<17} {'rows':>5} {'cold ms':>8} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'p99 ms':>7} {'req/s':>6} {'server ms':>9} {'CPU ms/req: serve':>17} "
        f"{'PG':>5} {'client':>6} {'conns':>5}  p95 <= {TARGET_P95_MS:.0f} ms"
    )
    print(header)
    print("-" * len(header))
    for result in results:
        server, database, client = result.cpu_ms
        print(
            f"{result.name:<17} {result.rows:>5} {result.cold * 1000:>8.1f} "
            f"{statistics.median(result.latencies) * 1000:>7.1f} {result.p95:>7.1f} "
            f"{quantile(result.latencies, 0.99) * 1000:>7.1f} "
            f"{len(result.latencies) / result.wall:>6.0f} "
            f"{means.get(result.name, float('nan')) * 1000:>9.1f} {server:>17.2f} "
            f"{database:>5.2f} {client:>6.2f} {result.connections:>5}  "
            + ("met" if result.p95 <= TARGET_P95_MS else "MISSED")
        )


def profile(url: str, name: str, query: ReportQuery, runs: int = 20) -> None:
    """cProfile ``runs`` runs of a report's query (each in its own transaction)."""
    engine = make_engine(url)
    with Session(engine) as session, session.begin():
        run(session, name, query)  # the first run refreshes rollups, as the cold request does
    profiler = cProfile.Profile()
    began = time.perf_counter()
    for _ in range(runs):
        with Session(engine) as session, session.begin():
            profiler.enable()
            run(session, name, query)
            profiler.disable()
    elapsed = (time.perf_counter() - began) / runs
    engine.dispose()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
    print(f"==== {name}: {elapsed * 1000:.1f} ms a run ({runs} runs)\n{out.getvalue()}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000, help="events to seed")
    parser.add_argument("--days", type=int, default=90, help="days the seeded events span")
    parser.add_argument("--tenants", type=int, default=3)
    parser.add_argument("--clients", type=int, default=20, help="concurrent connections")
    parser.add_argument("--requests", type=int, default=400, help="measured requests per report")
    parser.add_argument(
        "--range-days", type=int, default=30, help="days each report asks for (the latest)"
    )
    parser.add_argument("--reports", help="comma-separated report names (default: all)")
    parser.add_argument(
        "--database",
        help="a database URL seeded before (e.g. by --keep): used as it is, neither seeded "
        "nor dropped",
    )
    parser.add_argument(
        "--keep", action="store_true", help="do not drop the seeded database; print its URL"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of the load: run each report's query 20 times in this process under "
        "cProfile and print where the time went",
    )
    args = parser.parse_args()
    names = args.reports.split(",") if args.reports else list(REPORTS)
    unknown = [name for name in names if name not in REPORTS]
    if unknown:
        parser.error(f"unknown report(s) {', '.join(unknown)}; choose from {', '.join(REPORTS)}")
    if args.clients < 1 or args.requests < args.clients:
        parser.error("--clients must be at least 1 and --requests at least --clients")

    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    own = scratch_database("api_load", args.keep) if args.database is None else None
    with own or nullcontext(args.database) as url:
        if args.database is None:
            began = time.perf_counter()
            stored, first, last = seed(url, args.events, args.days, args.tenants)
            print(
                f"seeded {stored:,} events ({args.tenants} tenants, {first:%Y-%m-%d} .. "
                f"{last:%Y-%m-%d}) through the writer in {time.perf_counter() - began:.1f} s"
            )
        else:
            last = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=1)
            print(f"database {url.rsplit('/', 1)[-1]} as it is (seeded by an earlier run)")
        engine = make_engine(url)
        with Session(engine) as session, session.begin():
            _, key = create_key(session, "tenant-1", "api-load")
        engine.dispose()
        since = (last - timedelta(days=args.range_days - 1)).date()
        query = f"since={since.isoformat()}&until={last.date().isoformat()}"
        if args.profile:
            for name in names:
                profile(url, name, ReportQuery("tenant-1", since, last.date()))
            return 0
        port = free_port()
        log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"api_load_serve_{port}.log"
        with server(url, port, log_path) as serving:
            print(
                f"analytics serve on :{port}; tenant-1, {query}; {args.clients} clients, "
                f"{args.requests} requests per report, keep-alive\n"
            )
            results = [
                measure(url, port, serving.pid, key, name, query, args.clients, args.requests)
                for name in names
            ]
            means = report_means(port)
    print_table(results, means)
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    missed = [result.name for result in results if result.p95 > TARGET_P95_MS]
    print(
        f"{len(names) - len(missed)} of {len(names)} endpoints met p95 <= {TARGET_P95_MS:.0f} ms"
        + (f"; missed: {', '.join(missed)}" if missed else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark the real pipeline end to end, as a user runs it, against issue 4's targets.

    python -m benchmarks.pipeline [--quick] [--events N] [--workers N] [--json out.json]

What it runs: one ``analytics bridge`` and one ``analytics worker --concurrency N``
(a prefork worker: N pool processes, 2 by default, like ``analytics up``) against
local Redis and PostgreSQL. It creates a PostgreSQL database of its own (and a
second one for the baseline), migrates them, takes a Redis DB number as the
Celery broker (12 by default, flushed at the start and the end) and a pub/sub
channel prefix no one else uses (``bench-<run>:events``). Every process,
database and Redis DB it made is removed at the end, on failure and on Ctrl-C.

The stream is ``loadgen``'s realistic mix of all 15 event types for 3
tenants (order.created with 1-4 items), re-stamped per run by ``loadgen.publishing``:
ids unique to the run, tenants ``bench-<run>-N``, timestamps near now.

Phases (each checks that the aggregates are exact; tables are truncated between
phases so each starts from the same empty store):

1. warm-up (not reported), then sustained throughput, 3 runs of ``--events``
   published at ``--sustained-rate`` (40,000/s: more than the pipeline can take,
   so it runs flat out): median, min and max of events / (last ``stored_at`` -
   first publish);
2. latency: ``--latency-rate`` (1,000/s) for ``--latency-seconds`` (20 s);
   publish -> ``stored_at`` p50/p90/p99/max. ``stored_at`` is stamped by the
   worker as it writes a batch, before the commit; the database is polled every
   50 ms during this phase to estimate how long rows waited for their commit;
   then ("contended") the same beside ``--hogs`` (1) busy-loop processes, as on
   a slower or shared machine (reported, not a target);
3. burst: ``--burst-events`` (200,000) at ``--burst-rate`` (40,000/s), while
   ``CLIENT LIST`` is sampled every 100 ms for the bridge's output buffer; loss,
   disconnects (client id changed or gone, the Redis log, PUBLISH answered 0,
   the bridge's "resubscribed" line) and the bridge's peak RSS;
4. the same sustained runs with ``--scale-workers`` (4) worker processes, each
   paired with a run with ``--workers`` (2) at the same moment (they alternate,
   each with a fresh worker, so drift weighs on both alike); it passes when the
   median with 4 is not below the slowest of the paired runs with 2;
5. the baseline: ``benchmarks.naive_consumer`` (the seed's single-process
   consumer, one transaction per event) on the same stream, published as fast
   as it can take without its output buffer passing 8 MB (so it loses nothing
   and its best is measured);
6. replay: ``--replay-events`` (100,000) of a replay-shaped stream, ``--repeats``
   times as fast as the pipeline takes them: ``--replay-tenants`` (4) tenants of
   ``--replay-users`` (2,200) users each, timestamps spread over the past
   ``--replay-days`` (10) days (many distinct days, hours and users per batch, so
   fewer counter rows merge than on the live stream); median events/s, exact;
7. CPU (issue 17): ``--idle-seconds`` (10) with no traffic, then each of
   ``--cpu-rates`` (200, 500, 2,000/s) held for ``--cpu-seconds`` (15 s), then
   ``--cpu-peak-events`` (30,000) as fast as the pipeline takes them. For each:
   CPU per event with everything counted (bridge, worker main and pool, Redis,
   this database's PostgreSQL backends; the publisher not counted, idle not
   subtracted), tasks and events per task, p99 publish -> stored_at; then a
   least-squares fit of CPU - idle = a x tasks + b x events over those runs:
   the fixed cost of a task and the cost of an event. CPU time from /proc, not
   wall time, so other load disturbs it little (it is reported beside). Redis
   is the shared server: its CPU includes other clients' (see the idle figure).
   ``python -m benchmarks.pipeline --only cpu`` runs it alone (~2 minutes).

Each run also reports the Celery tasks the worker finished (from its log:
events per task and task time) and where the machine's CPU went, including
unrelated processes, so a run disturbed by other load says so.

Then it prints one table: each target, the value measured and PASS or FAIL.
``--only`` runs some of the phases (sustained, latency, contended, burst,
scaled, baseline, replay, cpu; the pipeline is warmed up first either way); its table says
that it is not the full verdict.
``--quick`` scales everything down (under two minutes) to check the machinery;
its figures are not the issue's targets and the table says so. Progress goes to
stderr, the table to stdout. Exit status 0 when every target passed, 1 when one
failed, 2 when the benchmark itself could not run, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import redis
from sqlalchemy import Engine, create_engine, text

from analytics.db import make_engine
from benchmarks import procs
from benchmarks.claim import CLAIM_KEY, claim
from loadgen import checking, publishing

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024
#: A Celery worker's line for a finished task: "Task order.created[...] succeeded in 0.0123s".
TASK_DONE = re.compile(r"\] succeeded in ([0-9.]+)s")
#: The baseline's publisher waits while the consumer's unread output exceeds this.
BASELINE_OMEM_HOLD = 8 * MB

# Issue 4's targets.
TARGET_THROUGHPUT = 10_000.0
TARGET_SPEEDUP = 6.0
TARGET_BURST_EVENTS = 200_000
TARGET_BURST_RATE = 40_000.0
TARGET_BRIDGE_RSS = 300 * MB
TARGET_P99 = 0.5
TARGET_LATENCY_RATE = 1_000.0

# Issue 14's targets: twice issue 4's throughput, on the live and on a replay-shaped stream.
TARGET_LIVE_THROUGHPUT = 20_000.0
TARGET_REPLAY_THROUGHPUT = 15_000.0
TARGET_LIVE_SPEEDUP = 10.0

# Issue 17's targets: CPU per event at everyday rates (offered rate -> most CPU per event).
TARGET_CPU_PER_EVENT = {500.0: 300e-6, 2_000.0: 250e-6}
TARGET_CPU_P99 = 0.25
#: CPU shares counted as the pipeline's cost: everything but the publisher (this process).
COUNTED_CPU = (
    "bridge_cores",
    "worker_main_cores",
    "worker_pool_cores",
    "redis_cores",
    "postgres_cores",
)


def cpu_breakdown(
    before: dict[int, tuple[str, float]],
    after: dict[int, tuple[str, float]],
    busy: float,
    wall: float,
    *,
    pipeline: set[int],
    postgres: set[int],
    redis_pid: int,
    roles: dict[int, str] | None = None,
) -> tuple[dict[str, float], str]:
    """Where the machine's CPU went during a run, in cores (CPU seconds / wall seconds).

    ``pipeline``: bridge, workers and this publisher; ``postgres``: the backends of
    this run's database; ``other_cores``: every other process (other databases'
    backends, other people's jobs); ``unattributed``: kernel time (interrupts,
    network), steal and processes that came and went within the run. ``roles``
    names pipeline processes (bridge, worker main, worker pool, benchmark); each
    role's share is reported too, as ``<role>_cores`` (not added to the total).
    """
    groups = {"pipeline_cores": 0.0, "postgres_cores": 0.0, "redis_cores": 0.0, "other_cores": 0.0}
    shares: dict[str, float] = {}
    others: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        used = seconds - before.get(pid, (name, 0.0))[1]
        if pid in pipeline:
            groups["pipeline_cores"] += used
            if roles and pid in roles:
                key = f"{roles[pid].replace(' ', '_')}_cores"
                shares[key] = shares.get(key, 0.0) + used
        elif pid in postgres:
            groups["postgres_cores"] += used
        elif pid == redis_pid:
            groups["redis_cores"] += used
        else:
            groups["other_cores"] += used
            others[name] = others.get(name, 0.0) + used
    scale = 1 / max(wall, 1e-9)
    cpu = {key: value * scale for key, value in groups.items()}
    cpu["machine_busy_cores"] = busy * scale
    cpu["unattributed_cores"] = max(0.0, busy - sum(groups.values())) * scale
    cpu.update({key: value * scale for key, value in sorted(shares.items())})
    top = sorted(others.items(), key=lambda item: -item[1])[:3]
    described = ", ".join(
        f"{name} {used * scale:.2f}" for name, used in top if used * scale >= 0.01
    )
    return cpu, described or "none"


def closed_line(line: str) -> str:
    """A Redis log line about closing a client, shortened to when, whom and at what omem."""
    when = re.search(r"\d\d:\d\d:\d\d\.\d+", line)
    name = re.search(r"name=(\S+)", line)
    omem = re.search(r"omem=(\d+)", line)
    size = f"{int(omem.group(1)) / MB:.1f} MB" if omem else "?"
    return (
        f"{when.group(0) if when else '?'} closed {name.group(1) if name else '?'} "
        f"at omem {size} (output buffer limit)"
    )


def code_version() -> str:
    """The commit measured, and whether the working tree differs from it (read-only git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.split("\n")
    except OSError:
        return "unknown"
    files = [line[3:] for line in changed if line.strip()]
    return f"{head} + uncommitted changes to {', '.join(files)}" if files else head or "unknown"


def say(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------- settings


@dataclass
class Plan:
    events: int = 100_000
    repeats: int = 3
    tenants: int = 3
    workers: int = 2
    scale_workers: int = 4
    sustained_rate: float = TARGET_BURST_RATE
    latency_rate: float = TARGET_LATENCY_RATE
    latency_seconds: float = 20.0
    burst_events: int = TARGET_BURST_EVENTS
    burst_rate: float = TARGET_BURST_RATE
    warmup: int = 3_000
    timeout: float = 600.0
    stall: float = 30.0
    #: Events of the baseline run; 0: the same stream as the sustained runs.
    baseline_events: int = 0
    quick: bool = False
    #: Busy-loop processes beside the pipeline in the contended latency run.
    hogs: int = 1
    #: The phases to run (all of PHASES by default).
    phases: tuple[str, ...] = ()
    #: The CPU phase: offered rates held for ``cpu_seconds`` each, then ``cpu_peak_events``
    #: as fast as the pipeline takes them, and ``idle_seconds`` with no traffic.
    cpu_rates: tuple[float, ...] = (200.0, 500.0, 2_000.0)
    cpu_seconds: float = 15.0
    cpu_peak_events: int = 30_000
    idle_seconds: float = 10.0
    #: The replay phase: a stream of many tenants' users over past days, as a backfill sends.
    replay_events: int = 100_000
    replay_tenants: int = 4
    replay_users: int = 2_200
    replay_days: int = 10


PHASES = ("sustained", "latency", "contended", "burst", "scaled", "baseline", "replay", "cpu")


def plan_from(args: argparse.Namespace) -> Plan:
    plan = Plan()
    if args.quick:
        plan = Plan(
            events=5_000,
            latency_seconds=4.0,
            burst_events=30_000,
            warmup=1_000,
            timeout=120.0,
            stall=20.0,
            quick=True,
            cpu_seconds=4.0,
            cpu_peak_events=5_000,
            idle_seconds=3.0,
            replay_events=5_000,
            replay_users=200,
        )
    for name in (
        "events",
        "workers",
        "scale_workers",
        "sustained_rate",
        "latency_rate",
        "latency_seconds",
        "burst_events",
        "burst_rate",
        "repeats",
        "tenants",
        "timeout",
        "stall",
        "baseline_events",
        "hogs",
        "cpu_seconds",
        "cpu_peak_events",
        "idle_seconds",
        "replay_events",
        "replay_tenants",
        "replay_users",
        "replay_days",
    ):
        value = getattr(args, name)
        if value is not None:
            setattr(plan, name, value)
    if args.cpu_rates:
        plan.cpu_rates = tuple(args.cpu_rates)
    plan.phases = tuple(args.only or PHASES)
    return plan


# ------------------------------------------------------------------------ processes


class Proc:
    """A project process started by this benchmark, its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logs: Path):
        self.name = name
        self.log_path = logs / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv,
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.popen.pid
        #: pid -> the highest VmHWM seen for it (pool processes included).
        self.peaks: dict[int, int] = {}

    def output(self, since: int = 0) -> str:
        with self.log_path.open("rb") as handle:
            handle.seek(since)
            return handle.read().decode("utf-8", "replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def wait_for(self, needle: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.output():
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.popen.returncode}:\n{self.output()[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {needle!r} in its log after {timeout:.0f}s")
            time.sleep(0.1)

    def sample_rss(self) -> None:
        for pid, peak in procs.tree_peak_rss(self.pid).items():
            self.peaks[pid] = max(self.peaks.get(pid, 0), peak)

    def tree(self) -> list[int]:
        return procs.process_tree(self.pid)

    def stop(self, timeout: float = 30.0) -> None:
        members = self.tree()
        if self.popen.poll() is None:
            self.sample_rss()
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                say(f"{self.name} did not stop in {timeout:.0f}s: killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait()
        # Pool processes the parent left behind (killed parent) go too.
        procs.kill_processes((pid for pid in members if pid != self.pid), group=self.pid)
        self._log.close()


# -------------------------------------------------------------------------- results


@dataclass
class Run:
    """One measured publish -> stored run."""

    label: str
    events: int
    offered_rate: float
    publish_rate: float
    complete: bool
    wait: str
    exact: bool
    exactness: str
    #: "exact", or a few words on what was lost or wrong.
    verdict: str
    throughput: float
    seconds: float
    latency: dict[str, float]
    commit_lag_mean: float
    commit_lag_rows: int
    unreceived: int
    #: Seconds the publisher waited for a slow consumer (baseline backpressure).
    held: float = 0.0
    #: Celery tasks the workers finished during the run, and how long they took (s).
    tasks: int = 0
    task_mean: float = math.nan
    task_p99: float = math.nan
    max_omem: int = 0
    #: CLIENT LIST samples taken, and the connection ids seen under the watched name.
    watch_samples: int = 0
    watch_ids: list[str] = field(default_factory=list)
    disconnected: bool = False
    disconnect_evidence: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    #: Wall seconds over which ``cpu`` was measured (its cores times this: CPU seconds).
    cpu_wall: float = 0.0
    #: Transactions committed in other databases of the server during the run.
    other_commits: int = 0
    #: The unrelated processes that used the most CPU during the run.
    other_top: str = ""

    @property
    def ok(self) -> bool:
        return self.complete and self.exact


@dataclass
class Results:
    plan: Plan
    machine: dict[str, Any]
    sustained: list[Run] = field(default_factory=list)
    latency: Run | None = None
    #: The latency run again beside busy-loop processes (``--hogs``).
    contended: Run | None = None
    burst: Run | None = None
    scaled: list[Run] = field(default_factory=list)
    #: Runs with ``workers`` processes, each interleaved with one of ``scaled``.
    paired: list[Run] = field(default_factory=list)
    baseline: Run | None = None
    #: The CPU phase: one run per offered rate, then the peak run.
    cpu_runs: list[Run] = field(default_factory=list)
    #: The replay phase's runs (many users and days per batch).
    replay: list[Run] = field(default_factory=list)
    #: Cores used with no traffic (pipeline processes, Redis, the database's backends).
    idle: dict[str, float] = field(default_factory=dict)
    rss: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


# ------------------------------------------------------------------------ benchmark


class Benchmark:
    def __init__(self, plan: Plan, args: argparse.Namespace, cleanup: contextlib.ExitStack):
        self.plan = plan
        self.args = args
        self.cleanup = cleanup
        self.run_id = uuid.uuid4().hex[:8]
        self.admin_url = args.postgres_url
        self.broker_url = f"{args.redis_url.rstrip('/')}/{args.redis_db}"
        self.prefix = f"bench-{self.run_id}:events"
        self.naive_prefix = f"bench-{self.run_id}-naive:events"
        self.logs = Path(tempfile.mkdtemp(prefix=f"bench-{self.run_id}-"))
        self.redis = redis.Redis.from_url(self.broker_url)
        self.procs: list[Proc] = []
        self.bridge: Proc | None = None
        self.worker: Proc | None = None
        self.failed = False
        self.results = Results(plan, self._machine())

    # -- setup and teardown

    def _machine(self) -> dict[str, Any]:
        server = redis.Redis.from_url(self.broker_url).info("server")
        return {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "redis": server.get("redis_version"),
            "redis_pid": server.get("process_id"),
            "host": socket.gethostname(),
            "pii_salt": bool(os.environ.get("PII_SALT")),
            "code": code_version(),
        }

    def database(self, suffix: str) -> tuple[str, Engine]:
        name = f"analytics_bench_{self.run_id}{suffix}"
        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.cleanup.callback(self._drop_database, admin, name)
        url = self.admin_url.rsplit("/", 1)[0] + "/" + name
        from analytics.migrations import run_migrations

        run_migrations(url)
        engine = make_engine(url)
        self.cleanup.callback(engine.dispose)
        with engine.connect() as conn:
            version = conn.execute(text("SHOW server_version")).scalar_one()
        self.results.machine["postgresql"] = str(version).split()[0]
        return url, engine

    def _drop_database(self, admin: Engine, name: str) -> None:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()
        say(f"dropped database {name}")

    def _flush_broker(self) -> None:
        self.redis.flushdb()
        say(f"flushed broker {self.broker_url}")

    def setup(self) -> None:
        say(f"run {self.run_id}: logs in {self.logs}")
        self.cleanup.callback(self._remove_logs)
        # Before anything is emptied: another benchmark's queues must not be.
        claim(self.redis, f"benchmarks.pipeline run {self.run_id}")
        self.cleanup.callback(self._flush_broker)
        stale = [key for key in self.redis.scan_iter(count=1000) if key != CLAIM_KEY.encode()]
        if stale:
            say(f"broker DB {self.args.redis_db} held {len(stale)} keys: deleting them")
            self.redis.delete(*stale)
        self.db_url, self.engine = self.database("")
        self.naive_url, self.naive_engine = self.database("_naive")
        self.log_view = procs.RedisLog(self.redis)
        say(f"databases created and migrated; channels {self.prefix}:*")

    def _remove_logs(self) -> None:
        if self.failed or self.results.errors or self.args.keep_logs:
            say(f"process logs kept in {self.logs}")
        else:
            shutil.rmtree(self.logs, ignore_errors=True)

    def env(self, database_url: str, prefix: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=database_url,
            REDIS_URL=self.broker_url,
            CELERY_BROKER_URL=self.broker_url,
            CELERY_RESULT_BACKEND=self.broker_url,
            EVENT_CHANNEL_PATTERN=f"{prefix}:*",
            PYTHONUNBUFFERED="1",
            LOG_TASKS="1",  # the workers' per-task lines give the task durations (TASK_DONE)
        )
        return env

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        proc = Proc(name, argv, env, self.logs)
        self.procs.append(proc)
        self.cleanup.callback(self._stop, proc)
        return proc

    def _stop(self, proc: Proc) -> None:
        if proc.popen.returncode is None:
            proc.stop()
            say(f"stopped {proc.name} (pid {proc.pid})")

    def start_pipeline(self, workers: int) -> None:
        env = self.env(self.db_url, self.prefix)
        python = [sys.executable, "-m", "analytics"]
        self.worker = self.start(
            f"worker-{workers}",
            [
                *python,
                "worker",
                "--concurrency",
                str(workers),
                "-n",
                f"bench-{self.run_id}-{workers}@%h",
                "--without-mingle",
                "--without-gossip",
            ],
            env,
        )
        if self.bridge is None or self.bridge.popen.poll() is not None:
            self.bridge = self.start("bridge", [*python, "bridge"], env)
            self.bridge.wait_for("subscribed to")
        self.worker.wait_for("ready.")
        say(
            f"pipeline up: bridge pid {self.bridge.pid}, worker pid {self.worker.pid} "
            f"(--concurrency {workers})"
        )

    def stop_worker(self, record: bool = True) -> None:
        if self.worker is not None:
            if record:
                self._record_rss(self.worker)
            self._stop(self.worker)
            self.worker = None

    def _record_rss(self, proc: Proc) -> None:
        proc.sample_rss()
        pool = sorted(pid for pid in proc.peaks if pid != proc.pid)
        for pid, peak in proc.peaks.items():
            role = "main" if pid == proc.pid else f"pool {pool.index(pid) + 1}"
            self.results.rss[f"{proc.name} {role} (pid {pid})"] = peak

    def truncate(self, engine: Engine) -> None:
        from analytics.models import Base

        tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY"))

    # -- one measured run

    def bridge_name(self) -> str:
        assert self.bridge is not None
        return f"analytics-bridge-{socket.gethostname()}-{self.bridge.pid}"

    def measure(
        self,
        label: str,
        envelopes: list[dict[str, Any]],
        rate: float,
        *,
        engine: Engine,
        prefix: str,
        watch_name: str,
        watched: list[Proc],
        spread: float,
        start: datetime | None = None,
        poll: float = 0.25,
        hold: Callable[[], bool] | None = None,
        quiet: bool = False,
        timeout: float | None = None,
    ) -> Run:
        stream = publishing.build_stream(
            envelopes, channel_prefix=prefix, spread=spread, start=start
        )
        if not quiet:
            say(
                f"{label}: publishing {len(stream):,} events"
                + (f" at {rate:,.0f}/s" if rate else " as fast as possible")
            )
        offsets = {p.name: p.log_size() for p in watched}
        commits_before = self._other_commits()
        redis_log = procs.RedisLog(self.redis)
        pg_pids = set(self._pg_backends(engine))
        cpu_before = procs.machine_cpu()
        procs_before = procs.all_process_cpu()
        watch = procs.ClientWatch(redis.Redis.from_url(self.broker_url), watch_name)
        with watch:
            published = publishing.publish(
                self.redis,
                stream,
                rate,
                hold=hold,
                progress=None if quiet else self._progress("published", len(stream)),
            )
            waited = checking.wait_stored(
                engine,
                stream.tenants,
                len(stream),
                timeout=timeout or self.plan.timeout,
                stall=self.plan.stall,
                interval=poll,
                progress=None if quiet else self._progress("stored", len(stream)),
            )
        procs_after = procs.all_process_cpu()
        cpu_after = procs.machine_cpu()
        other_commits = max(0, self._other_commits() - commits_before)
        logs = {p.name: p.output(offsets[p.name]) for p in watched}
        durations = sorted(
            float(match)
            for name, output in logs.items()
            if name.startswith("worker")
            for match in TASK_DONE.findall(output)
        )
        pg_pids |= set(self._pg_backends(engine))
        wall = (cpu_after[1] - cpu_before[1]) / max(os.cpu_count() or 1, 1)
        cpu, other_top = self._cpu_of(
            watched, pg_pids, procs_before, procs_after, cpu_after[0] - cpu_before[0], wall
        )
        for proc in watched:
            proc.sample_rss()
        rows = checking.fetch_stored(engine, stream.tenants)
        speed = checking.throughput(published, rows)
        delay = checking.latency(stream, published, rows)
        lag, lag_rows = checking.commit_lag(rows, waited.samples)
        exact = checking.check_exact(engine, stream)
        evidence: list[str] = []
        if not watch.ids:
            # Conservative: a check that could not see the connection did not pass.
            evidence.append(
                f"no CLIENT LIST entry named {watch_name} in {watch.samples} samples: "
                "disconnects could not be checked"
            )
        if watch.disconnected:
            evidence.append(
                f"CLIENT LIST: connection ids {watch.ids}, absent in {watch.absent} samples"
            )
        logged = redis_log.buffer_disconnects(watch_name.rsplit("-", 1)[0])
        evidence += [f"Redis log: {closed_line(line)}" for line in logged]
        if published.unreceived:
            evidence.append(f"{published.unreceived} PUBLISHes reached no subscriber")
        again = sum(output.count("resubscribed") for output in logs.values())
        if again:
            evidence.append(f"consumer log: resubscribed {again} time(s)")
        run = Run(
            label=label,
            events=len(stream),
            offered_rate=rate,
            publish_rate=published.rate,
            complete=waited.complete,
            wait=waited.reason,
            exact=exact.exact,
            exactness=exact.summary(),
            verdict=exact.short(),
            throughput=speed.per_second,
            seconds=speed.seconds,
            latency={
                "p50": delay.p50,
                "p90": delay.p90,
                "p99": delay.p99,
                "max": delay.max,
                "min": delay.min,
                "mean": delay.mean,
            },
            commit_lag_mean=lag,
            commit_lag_rows=lag_rows,
            unreceived=published.unreceived,
            held=published.held,
            tasks=len(durations),
            task_mean=statistics.fmean(durations) if durations else math.nan,
            task_p99=checking.percentile(durations, 99),
            max_omem=watch.max_omem,
            watch_samples=watch.samples,
            watch_ids=list(watch.ids),
            disconnected=bool(evidence),
            disconnect_evidence=evidence,
            cpu=cpu,
            cpu_wall=wall,
            other_top=other_top,
            other_commits=other_commits,
        )
        if not quiet:
            say(
                f"{label}: {run.throughput:,.0f} events/s over {run.seconds:.2f}s, "
                f"p50 {run.latency['p50'] * 1000:.0f} ms, p99 {run.latency['p99'] * 1000:.0f} ms,"
                f" {run.exactness}; {waited.reason}; CPU busy {run.cpu['machine_busy_cores']:.2f}"
                f" cores (unrelated processes {run.cpu['other_cores']:.2f}: {other_top}); "
                f"{run.tasks} tasks"
                f" of {run.events / max(run.tasks, 1):.1f} events, mean"
                f" {run.task_mean * 1000:.1f} ms"
            )
        if not run.ok:
            self.results.errors.append(f"{label}: {waited.reason}; {exact.summary()}")
        return run

    def _cpu_of(
        self,
        watched: list[Proc],
        pg_pids: set[int],
        before: dict[int, tuple[str, float]],
        after: dict[int, tuple[str, float]],
        busy: float,
        wall: float,
    ) -> tuple[dict[str, float], str]:
        """Where the CPU went between two snapshots, with the roles of the watched processes."""
        roles = {os.getpid(): "benchmark"}
        for proc in watched:
            for pid in proc.tree():
                if proc is self.bridge:
                    roles[pid] = "bridge"
                else:
                    roles[pid] = "worker main" if pid == proc.pid else "worker pool"
        return cpu_breakdown(
            before,
            after,
            busy,
            wall,
            pipeline=set(roles),
            postgres=pg_pids,
            redis_pid=int(self.results.machine.get("redis_pid") or 0),
            roles=roles,
        )

    def _other_commits(self) -> int:
        """Commits so far in the server's databases other than this run's (others' load)."""
        with self.engine.connect() as conn:
            value = conn.execute(
                text(
                    "SELECT coalesce(sum(xact_commit), 0) FROM pg_stat_database "
                    "WHERE datname IS NOT NULL AND datname NOT LIKE :ours"
                ),
                {"ours": f"analytics_bench_{self.run_id}%"},
            ).scalar_one()
        return int(value)

    def _pg_backends(self, engine: Engine) -> list[int]:
        name = engine.url.database
        with engine.connect() as conn:
            return [
                int(pid)
                for (pid,) in conn.execute(
                    text(
                        "SELECT pid FROM pg_stat_activity WHERE datname = :name "
                        "AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
            ]

    def _progress(self, what: str, total: int) -> Callable[[int, float], None]:
        def report(done: int, elapsed: float) -> None:
            say(f"  {what} {done:,}/{total:,} after {elapsed:.1f}s")

        return report

    # -- phases

    def pipeline_run(
        self, label: str, envelopes: list[dict[str, Any]], rate: float, **options: Any
    ) -> Run:
        assert self.bridge is not None and self.worker is not None
        spread = max(len(envelopes) / rate if rate else 1.0, 1.0)
        run = self.measure(
            label,
            envelopes,
            rate,
            engine=self.engine,
            prefix=self.prefix,
            watch_name=self.bridge_name(),
            watched=[self.bridge, self.worker],
            spread=spread,
            **options,
        )
        self.truncate(self.engine)
        return run

    def replay_phase(self) -> list[Run]:
        """``repeats`` runs of a replay-shaped stream: past days, many users, full speed."""
        plan = self.plan
        say(
            f"simulating the replay stream: {plan.replay_events:,} events, {plan.replay_tenants}"
            f" tenants of {plan.replay_users:,} users over {plan.replay_days} days"
        )
        envelopes = publishing.simulate_replay(
            plan.replay_events, plan.replay_tenants, plan.replay_users, plan.replay_days, seed=5
        )
        days = timedelta(days=plan.replay_days)
        runs = []
        for n in range(plan.repeats):
            run = self.measure(
                f"replay {n + 1}/{plan.repeats}",
                envelopes,
                plan.sustained_rate,
                engine=self.engine,
                prefix=self.prefix,
                watch_name=self.bridge_name(),
                watched=[self.bridge, self.worker],  # type: ignore[list-item]
                spread=days.total_seconds(),
                start=datetime.now(UTC) - days - timedelta(hours=1),
            )
            self.truncate(self.engine)
            runs.append(run)
        return runs

    def latency_run(self, beside: str, seed: int) -> Run:
        """``latency_seconds`` of events at ``latency_rate``, the database polled every 50 ms."""
        plan = self.plan
        events = publishing.simulate(
            max(1, round(plan.latency_rate * plan.latency_seconds)), plan.tenants, seed=seed
        )
        return self.pipeline_run(
            f"latency at {plan.latency_rate:,.0f}/s{beside}", events, plan.latency_rate, poll=0.05
        )

    @contextlib.contextmanager
    def hogs(self, count: int) -> Iterator[None]:
        """``count`` processes that burn a core each: a slower or shared machine."""
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
        try:
            yield
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()

    def warm_up(self, envelopes: list[dict[str, Any]]) -> None:
        run = self.pipeline_run("warm-up", envelopes[: self.plan.warmup], 2_000.0, quiet=True)
        say(f"warm-up: {run.events} events, {run.exactness}")

    def sustained(self, envelopes: list[dict[str, Any]], label: str) -> list[Run]:
        self.warm_up(envelopes)
        return [
            self.pipeline_run(
                f"{label} {n + 1}/{self.plan.repeats}", envelopes, self.plan.sustained_rate
            )
            for n in range(self.plan.repeats)
        ]

    def scaling(self, envelopes: list[dict[str, Any]]) -> tuple[list[Run], list[Run]]:
        """Runs with ``scale_workers`` processes, each beside one with ``workers``.

        The two settings alternate (2, 4, then 4, 2, ...), each with a fresh worker and
        a warm-up, so that a drift of the machine over the phase (other load, the
        database's checkpoints) weighs on both alike.
        """
        plan = self.plan
        scaled: list[Run] = []
        paired: list[Run] = []
        for n in range(plan.repeats):
            order = [(plan.workers, paired), (plan.scale_workers, scaled)]
            for workers, runs in order[:: 1 if n % 2 == 0 else -1]:
                self.start_pipeline(workers)
                self.warm_up(envelopes)
                runs.append(
                    self.pipeline_run(
                        f"sustained ({workers} proc) {n + 1}/{plan.repeats} of the pairs",
                        envelopes,
                        plan.sustained_rate,
                    )
                )
                self.stop_worker(record=workers == plan.scale_workers and n == 0)
        return scaled, paired

    def baseline(self, envelopes: list[dict[str, Any]]) -> Run:
        env = self.env(self.naive_url, self.naive_prefix)
        naive = self.start(
            "naive-consumer", [sys.executable, "-m", "benchmarks.naive_consumer"], env
        )
        naive.wait_for("subscribed to")
        name = f"analytics-naive-{socket.gethostname()}-{naive.pid}"
        probe = redis.Redis.from_url(self.broker_url)
        checked, holding = 0.0, False

        def hold() -> bool:
            # Backpressure: wait while the consumer's unread output is large (sampled every 20 ms).
            nonlocal checked, holding
            if time.monotonic() - checked >= 0.02:
                checked = time.monotonic()
                entries = procs.clients_named(probe, name)
                holding = bool(entries) and int(entries[0]["omem"]) > BASELINE_OMEM_HOLD
            return holding

        run = self.measure(
            "baseline (single-process consumer)",
            envelopes,
            self.plan.sustained_rate,
            engine=self.naive_engine,
            prefix=self.naive_prefix,
            watch_name=name,
            watched=[naive],
            spread=max(len(envelopes) / 1_500, 1.0),
            hold=hold,
            # One transaction per event is slow: allow it 20 ms an event before giving up.
            timeout=max(self.plan.timeout, len(envelopes) / 50),
        )
        self._record_rss(naive)
        self._stop(naive)
        return run

    def idle(self) -> dict[str, float]:
        """Cores the pipeline, Redis and the database's backends use with no traffic."""
        assert self.bridge is not None and self.worker is not None
        watched = [self.bridge, self.worker]
        say(f"idle: {self.plan.idle_seconds:.0f}s with no traffic")
        pg_pids = set(self._pg_backends(self.engine))
        machine_before, before = procs.machine_cpu(), procs.all_process_cpu()
        time.sleep(self.plan.idle_seconds)
        after, machine_after = procs.all_process_cpu(), procs.machine_cpu()
        wall = (machine_after[1] - machine_before[1]) / max(os.cpu_count() or 1, 1)
        cpu, _ = self._cpu_of(
            watched, pg_pids, before, after, machine_after[0] - machine_before[0], wall
        )
        cpu["counted_cores"] = counted_cores(cpu)
        say(f"idle: {cpu_of_counted(cpu)}")
        return cpu

    def cpu_phase(self) -> list[Run]:
        """Each of ``cpu_rates`` held for ``cpu_seconds``, then the peak: CPU per event."""
        plan = self.plan
        runs = []
        for n, rate in enumerate(plan.cpu_rates):
            events = publishing.simulate(
                max(1, round(rate * plan.cpu_seconds)), plan.tenants, seed=10 + n
            )
            runs.append(self.pipeline_run(f"cpu at {rate:,.0f}/s", events, rate))
        peak = publishing.simulate(plan.cpu_peak_events, plan.tenants, seed=9)
        runs.append(self.pipeline_run("cpu at peak", peak, plan.sustained_rate))
        for run in runs:
            say(f"{run.label}: {cpu_per_event(run) * 1e6:,.0f} us CPU per event counted")
        return runs

    def run(self) -> Results:
        plan = self.plan
        phases = plan.phases or PHASES
        started = time.monotonic()
        self.setup()
        say(f"simulating events for {', '.join(phases)}")
        envelopes = publishing.simulate(plan.events, plan.tenants, seed=1)
        self.start_pipeline(plan.workers)
        if "sustained" in phases:
            self.results.sustained = self.sustained(envelopes, f"sustained ({plan.workers} proc)")
        else:
            self.warm_up(envelopes)
        if "latency" in phases:
            self.results.latency = self.latency_run("", seed=2)
        if "contended" in phases and plan.hogs > 0:
            with self.hogs(plan.hogs):
                self.results.contended = self.latency_run(
                    f" beside {plan.hogs} busy loop(s)", seed=4
                )
        if "cpu" in phases:
            self.results.idle = self.idle()
            self.results.cpu_runs = self.cpu_phase()
        if "replay" in phases:
            self.results.replay = self.replay_phase()
        if "burst" in phases:
            burst_events = publishing.simulate(plan.burst_events, plan.tenants, seed=3)
            self.results.burst = self.pipeline_run(
                f"burst of {plan.burst_events:,}", burst_events, plan.burst_rate
            )
        assert self.bridge is not None
        self._record_rss(self.bridge)
        self.stop_worker()
        if "scaled" in phases:
            self.results.scaled, self.results.paired = self.scaling(envelopes)
        self._record_rss(self.bridge)
        self._stop(self.bridge)
        if "baseline" in phases:
            count = plan.baseline_events or plan.events
            self.results.baseline = self.baseline(
                envelopes
                if count == plan.events
                else publishing.simulate(count, plan.tenants, seed=1)
            )
        self.results.seconds = time.monotonic() - started
        return self.results


# ---------------------------------------------------------------------------- table


def fmt_bytes(value: int) -> str:
    return f"{value / MB:.1f} MB" if value >= MB else f"{value / 1024:.0f} KB"


def fmt_rate(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.0f} ev/s"


def fmt_ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value * 1000:,.0f} ms"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def tasks_of(runs: list[Run]) -> str:
    return ", ".join(
        f"{r.tasks} ({r.events / max(r.tasks, 1):.1f}, {fmt_ms(r.task_mean)})" for r in runs
    )


def disconnects_of(runs: list[Run]) -> str:
    def one(run: Run) -> str:
        logged = [e for e in run.disconnect_evidence if e.startswith("Redis log")]
        if logged:
            return "YES (" + logged[0].removeprefix("Redis log: ").split(" at ")[0] + ")"
        return "YES" if run.disconnected else "no"

    return ", ".join(one(run) for run in runs)


def cpu_of(run: Run) -> str:
    return ", ".join(f"{key.removesuffix('_cores')} {value:.2f}" for key, value in run.cpu.items())


def counted_cores(cpu: dict[str, float]) -> float:
    """Cores of the pipeline's own processes: bridge, workers, Redis, the database's backends."""
    return sum(cpu.get(key, 0.0) for key in COUNTED_CPU)


def cpu_of_counted(cpu: dict[str, float]) -> str:
    parts = ", ".join(
        f"{key.removesuffix('_cores')} {cpu.get(key, 0.0):.3f}" for key in COUNTED_CPU
    )
    return f"{counted_cores(cpu):.3f} cores ({parts})"


def cpu_per_event(run: Run) -> float:
    """CPU seconds per event, everything counted (the publisher not), idle not subtracted."""
    return counted_cores(run.cpu) * run.cpu_wall / max(run.events, 1)


def publisher_per_event(run: Run) -> float:
    """CPU seconds per event of this benchmark's own process (the publisher), not counted.

    It does the same work for every event at a given rate, so between runs of different
    hours it shows how fast the machine was (this one's swings by half within a day).
    """
    return run.cpu.get("benchmark_cores", 0.0) * run.cpu_wall / max(run.events, 1)


def fit_cost(runs: list[Run], idle_cores: float) -> tuple[float, float, float]:
    """Least squares of CPU = a x tasks + b x events over ``runs`` (idle CPU taken off).

    Returns (a seconds per task, b seconds per event, the largest relative residual).
    """
    rows = [
        (float(r.tasks), float(r.events), (counted_cores(r.cpu) - idle_cores) * r.cpu_wall)
        for r in runs
        if r.tasks
    ]
    if len(rows) < 2:
        return math.nan, math.nan, math.nan
    stt = sum(t * t for t, _, _ in rows)
    ste = sum(t * e for t, e, _ in rows)
    see = sum(e * e for _, e, _ in rows)
    sty = sum(t * y for t, _, y in rows)
    sey = sum(e * y for _, e, y in rows)
    det = stt * see - ste * ste
    if det == 0:
        return math.nan, math.nan, math.nan
    a = (sty * see - sey * ste) / det
    b = (sey * stt - sty * ste) / det
    worst = max(abs(a * t + b * e - y) / max(abs(y), 1e-9) for t, e, y in rows)
    return a, b, worst


def median_of(runs: list[Run]) -> float:
    values = [r.throughput for r in runs if not math.isnan(r.throughput)]
    return statistics.median(values) if values else math.nan


def cpu_rows(
    results: Results,
    target: Callable[[str, str, str, bool], None],
    info: Callable[[str, str], None],
) -> None:
    """The CPU phase's rows: idle, CPU per event at each rate and at peak, the cost fit."""
    runs = results.cpu_runs
    if not runs:
        return
    idle = results.idle.get("counted_cores", math.nan)
    info(
        f"idle CPU, no traffic ({results.plan.idle_seconds:.0f}s)",
        cpu_of_counted(results.idle) if results.idle else "n/a",
    )
    for run in runs:
        per_event = cpu_per_event(run)
        rate = "peak" if run.label.endswith("peak") else f"{run.offered_rate:,.0f} ev/s"
        measured = (
            f"{per_event * 1e6:,.0f} us ({counted_cores(run.cpu):.2f} cores; {run.tasks} tasks "
            f"of {run.events / max(run.tasks, 1):.1f} events, {fmt_ms(run.task_mean)}; "
            f"p99 {fmt_ms(run.latency['p99'])}; {run.verdict})"
        )
        if rate == "peak":
            measured += f"; {fmt_rate(run.throughput)}"
        most = TARGET_CPU_PER_EVENT.get(run.offered_rate)
        name = f"CPU per event at {rate}, all counted"
        if most is None or rate == "peak":
            info(name, measured)
        else:
            target(
                name,
                measured,
                f"<= {most * 1e6:.0f} us, p99 <= {TARGET_CPU_P99 * 1000:.0f} ms",
                per_event <= most and run.latency["p99"] <= TARGET_CPU_P99 and run.ok,
            )
    info(
        "  the publisher's own CPU an event (not counted)",
        ", ".join(
            f"{'peak' if r.label.endswith('peak') else f'{r.offered_rate:,.0f}/s'} "
            f"{publisher_per_event(r) * 1e6:,.0f} us"
            for r in runs
        )
        + ": the same work at each rate, a yardstick of the machine's speed that hour",
    )
    a, b, worst = fit_cost(runs, 0.0 if math.isnan(idle) else idle)
    info(
        "  fit CPU - idle = a x tasks + b x events",
        f"a = {a * 1000:.2f} ms per task, b = {b * 1e6:.0f} us per event "
        f"(worst residual {worst:.0%})",
    )
    info(
        "  load from unrelated processes (cores)",
        ", ".join(f"{r.cpu.get('other_cores', 0.0):.2f}" for r in runs),
    )


def twice_rows(
    results: Results,
    target: Callable[[str, str, str, bool], None],
    info: Callable[[str, str], None],
) -> None:
    """Issue 14's rows: twice the throughput on the live stream and on a replay stream.

    Judged when the replay phase ran (a full run, or ``--only sustained replay``).
    """
    sustained, replay, base = results.sustained, results.replay, results.baseline
    if not replay:
        return
    live = median_of(sustained)
    if sustained:
        target(
            "twice the throughput: live stream (median, the sustained runs)",
            f"{fmt_rate(live)}",
            f">= {TARGET_LIVE_THROUGHPUT:,.0f} ev/s, exact",
            live >= TARGET_LIVE_THROUGHPUT and all(r.ok for r in sustained),
        )
    plan = results.plan
    rmed = median_of(replay)
    target(
        f"twice the throughput: replay stream ({plan.replay_tenants} tenants x "
        f"{plan.replay_users:,} users, {plan.replay_days} days; median of {len(replay)})",
        f"{fmt_rate(rmed)} (min {min(r.throughput for r in replay):,.0f}, max "
        f"{max(r.throughput for r in replay):,.0f}); {', '.join(r.verdict for r in replay)}",
        f">= {TARGET_REPLAY_THROUGHPUT:,.0f} ev/s, exact",
        rmed >= TARGET_REPLAY_THROUGHPUT and all(r.ok for r in replay),
    )
    info("  worker tasks per replay run (events/task, mean task time)", tasks_of(replay))
    info("  CPU during a replay run, in cores", cpu_of(replay[len(replay) // 2]))
    if sustained and base is not None and base.throughput:
        ratio = live / base.throughput
        target(
            "  seed-style consumer slower than the live stream by",
            f"{ratio:.1f}x",
            f">= {TARGET_LIVE_SPEEDUP:.0f}x",
            ratio >= TARGET_LIVE_SPEEDUP and base.ok,
        )


def table(results: Results) -> tuple[str, bool]:
    plan = results.plan
    rows: list[tuple[str, str, str, str]] = []
    notes: list[str] = []

    def target(name: str, measured: str, goal: str, ok: bool) -> None:
        rows.append((name, measured, goal, verdict(ok)))

    def info(name: str, measured: str) -> None:
        rows.append((name, measured, "", ""))

    sustained, scaled = results.sustained, results.scaled
    med = median_of(sustained)
    all_exact = all(r.ok for r in sustained)
    spread = (
        f"min {min(r.throughput for r in sustained):,.0f}, max "
        f"{max(r.throughput for r in sustained):,.0f}"
        if sustained
        else ""
    )
    lossy = "" if all_exact else f"; {sum(not r.ok for r in sustained)} run(s) not exact"
    if sustained:
        target(
            f"sustained throughput, {plan.workers} worker procs (median of {len(sustained)})",
            f"{fmt_rate(med)} ({spread}){lossy}",
            f">= {TARGET_THROUGHPUT:,.0f} ev/s, exact",
            med >= TARGET_THROUGHPUT and all_exact,
        )
        info(
            "  offered / achieved publish rate",
            ", ".join(f"{r.offered_rate:,.0f}/{r.publish_rate:,.0f}" for r in sustained),
        )
        info("  aggregates per run", ", ".join(r.verdict for r in sustained))
        info("  bridge disconnected by Redis", disconnects_of(sustained))
        info("  worker tasks per run (events/task, mean task time)", tasks_of(sustained))
    base = results.baseline
    if base is not None:
        ratio = med / base.throughput if base.throughput else math.nan
        target(
            "vs single-process seed-style consumer",
            f"{ratio:.1f}x (baseline {fmt_rate(base.throughput)} on {base.events:,} events, "
            f"{base.verdict}){lossy}",
            f">= {TARGET_SPEEDUP:.0f}x",
            ratio >= TARGET_SPEEDUP and all_exact and base.ok,
        )
        info(
            "  baseline: publisher waits while its omem > 8 MB",
            f"waited {base.held:.1f}s, max omem {fmt_bytes(base.max_omem)}, "
            f"{'; '.join(base.disconnect_evidence) or 'no disconnect'}",
        )
    lat = results.latency
    if lat is not None:
        target(
            f"p99 publish->stored_at at {lat.offered_rate:,.0f} ev/s for "
            f"{lat.events / lat.offered_rate:.0f}s",
            f"{fmt_ms(lat.latency['p99'])} (p50 {fmt_ms(lat.latency['p50'])}, "
            f"p90 {fmt_ms(lat.latency['p90'])}, max {fmt_ms(lat.latency['max'])})",
            f"<= {TARGET_P99 * 1000:.0f} ms, exact",
            lat.latency["p99"] <= TARGET_P99 and lat.ok,
        )
        info(
            "  stored_at -> visible (commit) lag, estimated",
            f"mean {fmt_ms(lat.commit_lag_mean)}, up to {lat.commit_lag_rows} rows "
            "written but not yet committed at one poll",
        )
        info("  worker tasks (events/task, mean task time)", tasks_of([lat]))
        info("  CPU during the latency run, in cores", cpu_of(lat))
    hogged = results.contended
    if hogged is not None:
        info(
            f"  {hogged.label} (a slower machine)",
            f"p99 {fmt_ms(hogged.latency['p99'])} (p50 {fmt_ms(hogged.latency['p50'])}), "
            f"{hogged.verdict}; {tasks_of([hogged])}; busy loops "
            f"{hogged.cpu.get('other_cores', 0.0):.2f} cores",
        )
    burst = results.burst
    if burst is not None:
        reached = burst.publish_rate >= 0.95 * burst.offered_rate
        target(
            f"burst of {burst.events:,} at {burst.offered_rate:,.0f} ev/s: zero loss",
            f"{burst.verdict}; published at {burst.publish_rate:,.0f} ev/s",
            "0 lost, rate reached",
            burst.ok and reached,
        )
        target(
            "  no output-buffer disconnect of the bridge",
            f"max omem {fmt_bytes(burst.max_omem)} in {burst.watch_samples} samples; "
            + ("DISCONNECTED (evidence below)" if burst.disconnected else "none seen"),
            "none (limit 32 MB)",
            not burst.disconnected,
        )
        for line in burst.disconnect_evidence:
            info("    evidence", line)
        info(
            "  burst: publish -> last stored",
            f"{fmt_rate(burst.throughput)} over {burst.seconds:.1f}s, "
            f"p99 latency {fmt_ms(burst.latency['p99'])}",
        )
    bridge_peaks = [v for k, v in results.rss.items() if k.startswith("bridge")]
    if bridge_peaks:
        target(
            "peak RSS of the bridge (whole run, burst included)",
            f"{max(bridge_peaks) / MB:,.0f} MB",
            f"<= {TARGET_BRIDGE_RSS / MB:,.0f} MB",
            max(bridge_peaks) <= TARGET_BRIDGE_RSS,
        )
    for name, peak in results.rss.items():
        if not name.startswith("bridge"):
            info(f"  peak RSS {name}", f"{peak / MB:,.0f} MB")
    if scaled:
        smed = median_of(scaled)
        scaled_lossy = (
            ""
            if all(r.ok for r in scaled)
            else f"; {sum(not r.ok for r in scaled)} run(s) not exact"
        )
        # Against the runs interleaved with them when there are (same moment, same drift).
        paired = results.paired or sustained
        pmed = median_of(paired)
        floor = min(r.throughput for r in paired) if paired else math.nan
        against = (
            f"{plan.workers}-proc runs interleaved with them: median {fmt_rate(pmed)}"
            if results.paired
            else f"{fmt_rate(med)}"
        )
        target(
            f"{plan.scale_workers} worker procs instead of {plan.workers} (median of "
            f"{len(scaled)})",
            f"{fmt_rate(smed)} (min {min(r.throughput for r in scaled):,.0f}, max "
            f"{max(r.throughput for r in scaled):,.0f}) vs {against}{scaled_lossy}",
            f"not lower: median >= slowest {plan.workers}-proc run ({floor:,.0f})",
            smed >= floor and all(r.ok for r in scaled) and all(r.ok for r in paired),
        )
        if results.paired:
            info(
                f"  the interleaved {plan.workers}-proc runs",
                ", ".join(f"{r.throughput:,.0f}" for r in results.paired)
                + f" ev/s; {', '.join(r.verdict for r in results.paired)}",
            )
        info("  aggregates per run", ", ".join(r.verdict for r in scaled))
        info("  bridge disconnected by Redis", disconnects_of(scaled))
        info("  worker tasks per run (events/task, mean task time)", tasks_of(scaled))
    twice_rows(results, target, info)
    cpu_rows(results, target, info)
    every = [
        *results.cpu_runs,
        *results.replay,
        *sustained,
        *scaled,
        *results.paired,
        *(r for r in (lat, results.contended, burst, base) if r is not None),
    ]
    target(
        "aggregates exact in every run",
        f"{sum(r.ok for r in every)}/{len(every)} runs exact",
        "all",
        bool(every) and all(r.ok for r in every),
    )
    if every:
        undisturbed = [r for r in every if r is not results.contended] or every
        busiest = max(undisturbed, key=lambda r: r.cpu.get("other_cores", 0.0))
        info(
            "load from unrelated processes during runs",
            f"CPU up to {busiest.cpu.get('other_cores', 0.0):.2f} of "
            f"{results.machine.get('cores')} cores ({busiest.label}: {busiest.other_top}); "
            f"{sum(r.other_commits for r in every):,} commits in other databases",
        )
        complete = sorted((r for r in sustained if r.ok), key=lambda r: r.throughput)
        typical = complete[len(complete) // 2] if complete else every[0]
        info(f"  CPU during {typical.label}, in cores", cpu_of(typical))
    passed = all(r[3] != "FAIL" for r in rows)
    widths = [
        max(len(r[i]) for r in [("measure", "measured", "target", ""), *rows]) for i in range(3)
    ]
    quick = " (--quick: scaled down, not the issue's targets)" if plan.quick else ""
    if plan.phases and set(plan.phases) != set(PHASES):
        quick += f" (only {', '.join(plan.phases)}: not the full verdict)"
    head = (
        f"Pipeline benchmark{quick}: {results.machine.get('cores')} cores, "
        f"Python {results.machine.get('python')}, "
        f"Redis {results.machine.get('redis')}, PostgreSQL {results.machine.get('postgresql')}"
    )
    lines = [
        head,
        f"1 bridge + 1 worker (--concurrency {plan.workers}, prefork); {plan.tenants} tenants, "
        f"all 15 event types; {plan.events:,} events per sustained run; PII_SALT "
        f"{'set' if results.machine.get('pii_salt') else 'unset'}; took "
        f"{results.seconds:.0f}s",
        f"code: {results.machine.get('code')}",
        "",
        f"{'measure'.ljust(widths[0])}  {'measured'.ljust(widths[1])}  "
        f"{'target'.ljust(widths[2])}  result",
        "  ".join("-" * w for w in widths) + "  ------",
    ]
    for name, measured, goal, result in rows:
        lines.append(
            f"{name.ljust(widths[0])}  {measured.ljust(widths[1])}  {goal.ljust(widths[2])}  "
            f"{result}".rstrip()
        )
    lines += ["", f"overall: {'PASS' if passed else 'FAIL'}", *notes]
    if results.errors:
        lines += ["", "problems:", *(f"- {e}" for e in results.errors)]
    return "\n".join(lines), passed


# ----------------------------------------------------------------------------- main


def load_results(path: Path) -> Results:
    """A run saved with --json, to print its table again."""
    data = orjson.loads(path.read_bytes())

    def run(value: dict[str, Any] | None) -> Run | None:
        if value is None:
            return None
        fields: dict[str, Any] = {
            k: (math.nan if v is None and k in NAN_FIELDS else v) for k, v in value.items()
        }
        fields["latency"] = {k: math.nan if v is None else v for k, v in value["latency"].items()}
        return Run(**fields)

    def runs(values: list[dict[str, Any]]) -> list[Run]:
        return [r for r in map(run, values) if r is not None]

    return Results(
        plan=Plan(**data["plan"]),
        machine=data["machine"],
        sustained=runs(data["sustained"]),
        latency=run(data["latency"]),
        contended=run(data.get("contended")),
        burst=run(data["burst"]),
        scaled=runs(data["scaled"]),
        paired=runs(data.get("paired", [])),
        baseline=run(data["baseline"]),
        cpu_runs=runs(data.get("cpu_runs", [])),
        replay=runs(data.get("replay", [])),
        idle=data.get("idle", {}),
        rss=data["rss"],
        errors=data["errors"],
        seconds=data["seconds"],
    )


NAN_FIELDS = {"throughput", "seconds", "commit_lag_mean", "task_mean", "task_p99"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[2:]),
    )
    parser.add_argument("--quick", action="store_true", help="scaled down: under two minutes")
    parser.add_argument("--events", type=int, help="events per sustained run (100,000)")
    parser.add_argument(
        "--baseline-events",
        type=int,
        help="events for the single-process baseline (default: --events, the same stream; "
        "it takes about 7 ms an event here, so 100,000 take ~12 minutes)",
    )
    parser.add_argument("--workers", type=int, help="worker processes (--concurrency; 2)")
    parser.add_argument("--scale-workers", type=int, help="worker processes of the scaling run (4)")
    parser.add_argument("--sustained-rate", type=float, help="offered rate of sustained runs")
    parser.add_argument("--latency-rate", type=float, help="offered rate of the latency run")
    parser.add_argument("--latency-seconds", type=float, help="length of the latency run")
    parser.add_argument("--burst-events", type=int, help="events in the burst (200,000)")
    parser.add_argument("--burst-rate", type=float, help="rate of the burst (40,000/s)")
    parser.add_argument("--repeats", type=int, help="runs per throughput figure (3)")
    parser.add_argument("--tenants", type=int, help="tenants in the stream (3)")
    parser.add_argument(
        "--hogs",
        type=int,
        help="busy-loop processes beside the pipeline in the contended latency run (1)",
    )
    parser.add_argument(
        "--cpu-rates",
        type=float,
        nargs="+",
        help="offered rates of the CPU phase, each held for --cpu-seconds (200 500 2000)",
    )
    parser.add_argument("--cpu-seconds", type=float, help="length of each CPU-phase rate (15)")
    parser.add_argument(
        "--cpu-peak-events", type=int, help="events of the CPU phase's peak run (30,000)"
    )
    parser.add_argument(
        "--idle-seconds", type=float, help="CPU measured with no traffic for this long (10)"
    )
    parser.add_argument(
        "--replay-events", type=int, help="events per run of the replay phase (100,000)"
    )
    parser.add_argument("--replay-tenants", type=int, help="tenants of the replay stream (4)")
    parser.add_argument(
        "--replay-users", type=int, help="users per tenant of the replay stream (2,200)"
    )
    parser.add_argument(
        "--replay-days", type=int, help="past days the replay stream's timestamps span (10)"
    )
    parser.add_argument("--timeout", type=float, help="longest wait for one run's events (s)")
    parser.add_argument("--stall", type=float, help="give up on a run stuck this long (s)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=PHASES,
        help="run only these phases (default: all); a partial run is not the full verdict",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
        ),
        help="a database to connect to for CREATE/DROP DATABASE",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379"),
        help="Redis server (no DB number)",
    )
    parser.add_argument(
        "--redis-db",
        type=int,
        default=int(os.environ.get("BENCH_REDIS_DB", "12")),
        help="Redis DB number used as the Celery broker; FLUSHED at start and end (12); "
        "refused while another benchmark holds it",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the process logs")
    parser.add_argument(
        "--table-from",
        type=Path,
        metavar="JSON",
        help="print the table of a run saved with --json, and run nothing",
    )
    return parser.parse_args(argv)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP end the run with KeyboardInterrupt, so cleanup runs.

    SIGINT gets a handler of its own too: a background job starts with it ignored.
    """

    def interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {
        s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table_from:
        report, passed = table(load_results(args.table_from))
        print(report)
        return 0 if passed else 1
    plan = plan_from(args)
    results: Results | None = None
    benchmark: Benchmark | None = None
    status = 2
    with signals_raise():
        cleanup = contextlib.ExitStack()
        try:
            with cleanup:
                benchmark = Benchmark(plan, args, cleanup)
                try:
                    results = benchmark.run()
                except BaseException:
                    benchmark.failed = True
                    # Keep Ctrl-C from interrupting the cleanup that follows.
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
                    raise
                finally:
                    say("cleaning up")
        except KeyboardInterrupt:
            say("interrupted: everything this run started was stopped and removed")
            return 130
        except Exception as exc:
            say(f"benchmark failed: {type(exc).__name__}: {exc}")
            return 2
    assert results is not None
    report, passed = table(results)
    print(report, flush=True)
    if args.json:
        payload = asdict(results)
        args.json.write_text(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode())
        say(f"wrote {args.json}")
    status = 0 if passed else 1
    return status


if __name__ == "__main__":
    sys.exit(main())

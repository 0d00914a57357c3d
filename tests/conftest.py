"""Shared fixtures: a PostgreSQL database and a Redis DB of this run's own, and real processes.

Each test session creates its own PostgreSQL database (migrated with Alembic)
and drops it at the end; it takes one Redis DB number (TEST_REDIS_DB, default 13)
as the Celery broker and flushes it before and after; its pub/sub channels carry
a prefix no other run uses. Without PostgreSQL or Redis the tests that need them
fail under CI and skip elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, create_engine, text

from analytics.db import make_engine
from analytics.models import Base

ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
REDIS_BASE = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "13"))
RUN_ID = uuid.uuid4().hex[:8]
IN_CI = bool(os.environ.get("CI"))


def _unavailable(what: str, exc: Exception) -> None:
    message = f"{what} is not reachable: {exc}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def _with_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


@contextlib.contextmanager
def scratch_database(name: str) -> Iterator[str]:
    """An empty PostgreSQL database ``name`` (its URL), dropped when the block ends."""
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        _unavailable("PostgreSQL", exc)
    try:
        yield _with_database(ADMIN_URL, name)
    finally:
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


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A freshly created and migrated PostgreSQL database, dropped after the run."""
    from analytics.migrations import run_migrations

    with scratch_database(f"analytics_test_{RUN_ID}") as url:
        run_migrations(url)
        yield url


def truncate_all(engine: Engine) -> None:
    tables = [table.name for table in Base.metadata.sorted_tables]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY"))
        else:
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture(scope="session")
def postgres_engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg(postgres_engine: Engine) -> Iterator[Engine]:
    """The run's PostgreSQL database, emptied after the test."""
    yield postgres_engine
    truncate_all(postgres_engine)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    from analytics.migrations import run_migrations

    url = f"sqlite:///{tmp_path / 'analytics.db'}"
    run_migrations(url)
    return url


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The same test on PostgreSQL and on a SQLite file, each migrated to head."""
    if request.param == "postgresql":
        yield request.getfixturevalue("pg")
        return
    engine = make_engine(request.getfixturevalue("sqlite_url"))
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis DB of this run's own (for the Celery broker), flushed before and after."""
    url = f"{REDIS_BASE}/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        _unavailable("Redis", exc)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


class RabbitMQ:
    """A RabbitMQ virtual host of one test's own (the machine's server, via rabbitmqctl)."""

    def __init__(self, vhost: str):
        self.vhost = vhost
        self.url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"

    @staticmethod
    def ctl(*args: str) -> str:
        return subprocess.run(
            ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=True
        ).stdout

    def backlog(self) -> dict[str, int]:
        """Messages in each queue of the vhost, ready or delivered and not acknowledged."""
        out = self.ctl("list_queues", "-p", self.vhost, "name", "messages", "--no-table-headers")
        counts = (line.split("\t") for line in out.splitlines() if line.strip())
        return {name: int(n) for name, n in counts if int(n)}


@pytest.fixture
def rabbitmq() -> Iterator[RabbitMQ]:
    """A fresh RabbitMQ vhost for the Celery broker, deleted after the test."""
    broker = RabbitMQ(f"analytics_test_{RUN_ID}_{uuid.uuid4().hex[:6]}")
    try:
        broker.ctl("add_vhost", broker.vhost)
        broker.ctl("set_permissions", "-p", broker.vhost, "guest", ".*", ".*", ".*")
    except (OSError, subprocess.SubprocessError) as exc:
        _unavailable("RabbitMQ", exc)
    yield broker
    broker.ctl("delete_vhost", broker.vhost)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def fresh_broker(redis_client: redis.Redis) -> Iterator[None]:
    """Flush the broker DB after the test; list it first so it is torn down after the
    processes: no task message outlives its test's workers."""
    yield
    redis_client.flushdb()


@pytest.fixture
def channel_prefix() -> str:
    """A pub/sub prefix no other test or process uses: ``test-<run>-<n>:events``."""
    return f"test-{RUN_ID}-{uuid.uuid4().hex[:6]}:events"


def wait_for(
    predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


class Process:
    """A real project process (worker, bridge) whose output goes to a log file."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        preexec_fn: Callable[[], None] | None = None,
    ):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec_fn,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, needle: str, timeout: float = 60.0) -> None:
        def seen() -> bool:
            if self.popen.poll() is not None:
                pytest.fail(
                    f"{self.name} exited with {self.popen.returncode}:\n{self.output()[-3000:]}"
                )
            return needle in self.output()

        wait_for(seen, timeout=timeout, what=f"{needle!r} in the {self.name} log")

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """Kill the process and everything it started, at once: the test is over, and a
        warm shutdown takes a worker ~3 s. The broker DB and the tables are emptied after."""
        from benchmarks.procs import kill_processes, process_tree

        kill_processes(process_tree(self.popen.pid), group=self.popen.pid)
        self.popen.wait()
        self._log.close()

    def stop(self, timeout: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._log.close()
        return self.popen.returncode


@pytest.fixture
def pipeline_env(postgres_url: str, redis_url: str, channel_prefix: str) -> dict[str, str]:
    """Environment for real processes: this run's database, broker DB and channels."""
    env = {k: v for k, v in os.environ.items() if k not in {"PII_SALT"}}
    env.update(
        DATABASE_URL=postgres_url,
        REDIS_URL=redis_url,
        CELERY_BROKER_URL=redis_url,
        EVENT_CHANNEL_PATTERN=f"{channel_prefix}:*",
        # Beat's schedule and lock: a test's own, so no beat of another test holds it.
        BEAT_KEY_PREFIX=f"{channel_prefix}:beat:",
        BRIDGE_LOG_INTERVAL="1",
        PYTHONUNBUFFERED="1",
        LOG_TASKS="1",  # tests read which batches a worker received and finished
    )
    return env


@pytest.fixture
def start_process(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start ``python -m analytics ARGS`` (``preexec_fn`` runs in the child before it, e.g. to
    set a resource limit); every process is stopped when the test ends."""
    started: list[Process] = []

    def start(
        name: str,
        args: list[str],
        env: dict[str, str],
        preexec_fn: Callable[[], None] | None = None,
    ) -> Process:
        log_path = tmp_path / f"{name}-{len(started)}.log"
        argv = [sys.executable, "-m", "analytics", *args]
        process = Process(name, argv, env, log_path, preexec_fn)
        started.append(process)
        return process

    yield start
    for process in reversed(started):
        process.kill()


@pytest.fixture
def start_worker(
    start_process: Callable[..., Process], pipeline_env: dict[str, str]
) -> Callable[..., Process]:
    def start(*extra: str, concurrency: int = 2, env: dict[str, str] | None = None) -> Process:
        name = f"test-{uuid.uuid4().hex[:6]}@%h"
        worker = start_process(
            "worker",
            [
                "worker",
                "--concurrency",
                str(concurrency),
                "-n",
                name,
                "--without-mingle",
                "--without-gossip",
                *extra,
            ],
            env or pipeline_env,
        )
        worker.wait_for_output("ready.")
        return worker

    return start


@pytest.fixture
def start_bridge(
    start_process: Callable[..., Process], pipeline_env: dict[str, str]
) -> Callable[..., Process]:
    def start(
        *extra: str, env: dict[str, str] | None = None, ready: str = "subscribed to"
    ) -> Process:
        bridge = start_process("bridge", ["bridge", *extra], env or pipeline_env)
        bridge.wait_for_output(ready)
        return bridge

    return start

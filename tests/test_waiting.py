"""Long-running commands wait for services that start after them: one line a try, backoff,
and no waiting on a mistake that time will not mend."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from analytics.cli.waiting import is_unreachable, wait_for
from tests.conftest import wait_for as wait_until
from tests.test_cli import start_up

log = logging.getLogger("test.waiting")


def test_it_tries_again_with_backoff_while_the_service_does_not_answer(caplog):
    failures = [redis.ConnectionError("Error 111 connecting"), redis.TimeoutError("timed out")]
    slept: list[float] = []

    def attempt() -> str:
        if failures:
            raise failures.pop(0)
        return "PONG"

    with caplog.at_level(logging.WARNING):
        assert wait_for("Redis at here", attempt, log, sleep=slept.append) == "PONG"
    assert slept == [1.0, 2.0]
    assert [r.getMessage() for r in caplog.records] == [
        "waiting for Redis at here (try 1, again in 1s): ConnectionError: Error 111 connecting",
        "waiting for Redis at here (try 2, again in 2s): TimeoutError: timed out",
    ]


def test_the_pause_stops_growing_at_its_maximum():
    slept: list[float] = []
    tries = iter(range(8))

    def attempt() -> None:
        if next(tries) < 7:
            raise redis.ConnectionError("down")

    wait_for("Redis", attempt, log, max_delay=10, sleep=slept.append)
    assert slept == [1, 2, 4, 8, 10, 10, 10]


def test_a_mistake_is_raised_at_once():
    def attempt() -> None:
        raise redis.AuthenticationError("invalid username-password pair")

    with pytest.raises(redis.AuthenticationError):
        wait_for("Redis", attempt, log, sleep=lambda _: pytest.fail("it waited"))


def test_what_counts_as_not_answering(postgres_url):
    assert is_unreachable(redis.ConnectionError("refused"))
    assert not is_unreachable(ValueError("Redis URL must specify a scheme"))
    engine = create_engine("postgresql+psycopg2://x@127.0.0.1:1/x")
    with pytest.raises(OperationalError) as down:
        engine.connect()
    assert is_unreachable(down.value)
    migrated = create_engine(postgres_url)
    with pytest.raises(ProgrammingError) as missing, migrated.connect() as conn:
        conn.execute(text("SELECT * FROM no_such_table"))
    assert not is_unreachable(missing.value)
    migrated.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_up_started_before_redis_waits_for_it_then_runs(tmp_path, channel_prefix):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = _free_port()
    up, log_path, _ = start_up(tmp_path, f"redis://127.0.0.1:{port}/0", channel_prefix, "--no-beat")
    server = None
    try:
        waiting = f"waiting for Redis at redis://127.0.0.1:{port}/0 (try 2,"
        wait_until(lambda: waiting in log_path.read_text(), timeout=30, what="a second try")
        assert up.poll() is None
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(lambda: "subscribed to" in log_path.read_text(), timeout=90, what="the bridge")
        wait_until(lambda: "ready." in log_path.read_text(), timeout=90, what="the worker")
        output = log_path.read_text()
        assert "database at revision" in output and "Traceback" not in output
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=90) == 0
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
        if server is not None:
            server.terminate()
            server.wait(timeout=30)

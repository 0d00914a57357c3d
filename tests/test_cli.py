"""The ``analytics`` command as a user meets it: help, errors, publish, simulate, up."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

import orjson
import pytest
import redis
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from analytics.cli import main
from tests.conftest import wait_for

COMMANDS = ["migrate", "bridge", "worker", "beat", "flower", "publish", "simulate", "up"]


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "analytics", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_group_lists_every_command():
    assert set(COMMANDS) <= set(main.commands)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert (
        f"Usage: main {command}" in result.output or f"Usage: analytics {command}" in result.output
    )
    assert len(main.commands[command].help or "") > 40


def test_an_unknown_queue_is_refused_in_one_line():
    result = run("worker", "-Q", "orders")
    assert result.returncode == 2
    assert (
        "unknown queue(s) orders; choose from user, order, payment, inventory, misc, deadletter"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_a_malformed_setting_is_one_line_on_stderr():
    result = run("publish", env={"EVENT_CHANNEL_PATTERN": "events"})
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == "Error: EVENT_CHANNEL_PATTERN='events' needs a '*' where the category goes"
    )


def test_raw_publishing_needs_a_channel():
    result = run("publish", "--raw", "--event", "garbage")
    assert result.returncode == 2
    assert "--raw needs --channel" in result.stderr


def _listen(
    url: str, pattern: str, received: list[bytes], ready: threading.Event, stop: threading.Event
):
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub()
    pubsub.psubscribe(pattern)
    while not stop.is_set():
        message = pubsub.get_message(timeout=0.1)
        if message and message["type"] == "psubscribe":
            ready.set()
        elif message and message["type"] == "pmessage":
            received.append((message["channel"], message["data"]))
    pubsub.close()
    client.close()


@pytest.fixture
def listener(redis_url, channel_prefix):
    received: list[tuple[bytes, bytes]] = []
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=_listen, args=(redis_url, f"{channel_prefix}:*", received, ready, stop), daemon=True
    )
    thread.start()
    assert ready.wait(5)
    yield received
    stop.set()
    thread.join(5)


def test_publish_sends_the_seed_test_event_on_its_channel(listener, redis_url, channel_prefix):
    env = {"REDIS_URL": redis_url, "EVENT_CHANNEL_PATTERN": f"{channel_prefix}:*"}
    result = run("publish", env=env)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: listener, timeout=5)
    channel, data = listener[0]
    assert channel.decode() == f"{channel_prefix}:order:created"
    assert orjson.loads(data) == {
        "event_type": "order.created",
        "tenant_id": "test-tenant",
        "data": {"order_id": "test-order", "total_amount": 99.99},
    }


def test_publish_warns_when_nobody_listens(redis_url, channel_prefix):
    env = {"REDIS_URL": redis_url, "EVENT_CHANNEL_PATTERN": f"{channel_prefix}-nobody:*"}
    result = run("publish", env=env)
    assert result.returncode == 0
    assert "0 subscriber(s)" in result.stdout
    assert "nobody is subscribed" in result.stderr


def test_simulate_publishes_the_requested_stream(listener, redis_url, channel_prefix):
    env = {"REDIS_URL": redis_url, "EVENT_CHANNEL_PATTERN": f"{channel_prefix}:*"}
    result = run("simulate", "--count", "600", "--rate", "0", "--tenants", "3", env=env)
    assert result.returncode == 0, result.stderr
    assert "published 600 events for 3 tenant(s)" in result.stdout
    wait_for(lambda: len(listener) == 600, timeout=10, what="600 messages")
    types = {orjson.loads(data)["event_type"] for _, data in listener}
    assert len(types) >= 10
    for channel, data in listener:
        category, action = orjson.loads(data)["event_type"].split(".")
        assert channel.decode() == f"{channel_prefix}:{category}:{action}"


@pytest.mark.slow
def test_up_runs_the_whole_pipeline_on_sqlite_and_stops_cleanly(
    tmp_path, redis_url, channel_prefix
):
    database = tmp_path / "analytics.db"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "REDIS_URL": redis_url,
        "EVENT_CHANNEL_PATTERN": f"{channel_prefix}:*",
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "analytics", "up", "--concurrency", "1"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: "subscribed to" in log_path.read_text(), timeout=60, what="the bridge")
        wait_for(lambda: "ready." in log_path.read_text(), timeout=60, what="the worker")
        assert "beat: Starting" in log_path.read_text() or wait_for(
            lambda: "beat: Starting" in log_path.read_text(), timeout=30, what="beat"
        )
        published = run("publish", env=env)
        assert "1 subscriber(s)" in published.stdout
        engine = create_engine(f"sqlite:///{database}")

        def stored() -> int:
            with engine.connect() as conn:
                return (
                    conn.execute(
                        text(
                            "SELECT count FROM metric_counters "
                            "WHERE metric = 'revenue' AND tenant_id = 'test-tenant'"
                        )
                    ).scalar()
                    or 0
                )

        wait_for(stored, timeout=30, what="the test event in SQLite")
        engine.dispose()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=90) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    output = log_path.read_text()
    for name in ("bridge", "beat", "worker"):
        assert f"{name} stopped" in output
    pids = [int(pid) for pid in re.findall(r"started \w+ \(pid (\d+)\)", output)]
    assert len(pids) == 3
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

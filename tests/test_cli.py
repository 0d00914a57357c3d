"""The ``analytics`` command as a user meets it: help, errors, publish, simulate, up."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import redis
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from analytics.cli import main
from tests.conftest import wait_for


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


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


def test_version_is_the_installed_package_version():
    from importlib.metadata import version

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"analytics, version {version('analytics-pipeline')}\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert (
        f"Usage: main {command}" in result.output or f"Usage: analytics {command}" in result.output
    )
    assert len(main.commands[command].help or "") > 40


def test_the_worker_help_names_every_queue_it_consumes_by_default():
    from tasks.queues import QUEUES

    output = " ".join(CliRunner().invoke(main, ["worker", "--help"]).output.split())
    assert f"(default: all of {', '.join(QUEUES)})" in output


def test_the_bridge_help_names_its_batching_settings():
    output = " ".join(CliRunner().invoke(main, ["bridge", "--help"]).output.split())
    for setting in (
        "--batch-size",
        "--flush-ms",
        "BRIDGE_HOLD_BUDGET_MS",
        "BRIDGE_HOLD_EVENT_US",
        "BRIDGE_FILL_EVENTS",
        "BRIDGE_MAX_HOLD_MS",
        "BRIDGE_MAX_BUFFER_BYTES",
        "BRIDGE_MIX_TYPES",
        "BRIDGE_MIX_CATEGORIES",
        "events.mixed",
    ):
        assert setting in output


def test_the_bridge_exits_non_zero_when_a_thread_of_it_died(monkeypatch, redis_url):
    """So that a supervisor restarts it (the failure itself: tests/bridge/test_thread_failures)."""
    from bridge.relay import Bridge, BridgeFailed

    def failed(self: Bridge) -> None:
        raise BridgeFailed("the sender failed (Crash()); the bridge stopped")

    monkeypatch.setattr(Bridge, "run", failed)
    monkeypatch.setattr(signal, "signal", lambda *_: None)  # not pytest's own handlers
    result = CliRunner().invoke(
        main, ["bridge"], env={"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url}
    )
    assert result.exit_code == 1, result.output
    assert "the bridge failed: BridgeFailed: the sender failed" in result.output


def test_the_bridge_and_the_worker_processes_freeze_what_they_set_up(monkeypatch, redis_url):
    """Before the bridge reads, and in each worker process once it is set up (the pool's
    after the fork, the main one when ready): analytics.runtime says why."""
    from celery import signals

    from analytics import runtime
    from analytics.cli import processes
    from bridge.relay import Bridge
    from tasks.app import app

    frozen: list[str] = []
    monkeypatch.setattr(runtime, "freeze_startup_objects", frozen.append)
    monkeypatch.setattr(Bridge, "run", lambda self: frozen.append("bridge ran"))
    monkeypatch.setattr(signal, "signal", lambda *_: None)  # not pytest's own handlers
    env = {"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url}
    result = CliRunner().invoke(main, ["bridge"], env=env)
    assert result.exit_code == 0, result.output
    assert frozen == ["bridge", "bridge ran"]

    def worker_main(argv: list[str]) -> None:  # Celery's signals, as its processes send them
        signals.worker_process_init.send(sender="pool")
        signals.worker_ready.send(sender=None)

    monkeypatch.setattr(app, "worker_main", worker_main)
    monkeypatch.setattr(processes, "_setup_logging", lambda: None)  # pytest's logging stays
    frozen.clear()
    try:
        result = CliRunner().invoke(main, ["worker"], env=env)
    finally:
        signals.worker_process_init.disconnect(processes._freeze_pool_process)
        signals.worker_ready.disconnect(processes._freeze_main_process)
    assert result.exit_code == 0, result.output
    assert frozen == ["worker pool process", "worker main process"]


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


def test_publishing_a_type_without_category_and_action_asks_for_a_channel(redis_url):
    result = run(
        "publish",
        "--event",
        '{"event_type": "foo", "tenant_id": "t"}',
        env={"REDIS_URL": redis_url},
    )
    assert result.returncode == 1
    assert "must look like 'category.action'" in result.stderr
    assert "pass --channel" in result.stderr


def _listen(
    url: str,
    pattern: str,
    received: list[tuple[bytes, bytes]],
    ready: threading.Event,
    stop: threading.Event,
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
    assert run("publish", env=env).returncode == 0
    wait_for(lambda: len(listener) == 2, timeout=5)
    (channel, data), (_, again) = listener
    assert channel.decode() == f"{channel_prefix}:order:created"
    first, second = orjson.loads(data), orjson.loads(again)
    # As the seed's test endpoint fills them in: each run is a new event.
    assert first.pop("event_id") != second.pop("event_id")
    assert abs(datetime.fromisoformat(first.pop("timestamp")) - datetime.now(UTC)) < timedelta(
        minutes=1
    )
    assert first == {
        "event_type": "order.created",
        "tenant_id": "test-tenant",
        "data": {"order_id": "test-order", "total_amount": 99.99},
    }


def test_publish_and_simulate_say_when_their_events_are_stored_already(
    sqlite_url, redis_url, channel_prefix, tmp_path
):
    from analytics.db import make_engine
    from loadgen import Simulator
    from tests.analytics.helpers import apply, to_event

    stored = list(Simulator(tenants=1, seed=77, days=1).events(150))
    engine = make_engine(sqlite_url)
    apply(engine, [to_event(d) for d in stored[:120]])
    engine.dispose()
    env = {
        "REDIS_URL": redis_url,
        "EVENT_CHANNEL_PATTERN": f"{channel_prefix}:*",
        "DATABASE_URL": sqlite_url,
    }
    again = run("simulate", "--seed", "77", "--tenants", "1", "--days", "1", "--count", "150",
                "--rate", "0", env=env)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("seed 77 (simulate --seed 77 repeats this stream)")
    assert "note: 100 of the 100 first events of this stream are already stored" in again.stderr
    fresh = run("simulate", "--tenants", "1", "--days", "1", "--count", "150", "--rate", "0",
                env=env)  # fmt: skip
    assert fresh.returncode == 0 and "note:" not in fresh.stderr
    assert re.match(r"seed \d+ ", fresh.stdout) and not fresh.stdout.startswith("seed 77 ")
    path = tmp_path / "some.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(d) for d in stored[110:130]))
    result = run("publish", "--file", str(path), env=env)
    assert result.returncode == 0, result.stderr
    assert "note: 10 of the 20 events to publish are already stored" in result.stderr
    assert "published 20 events" in result.stdout
    unread = run("publish", "--file", str(path), env={**env, "DATABASE_URL": "sqlite:////nope/x"})
    assert unread.returncode == 0 and unread.stderr == ""


def test_publish_stream_adds_the_event_to_the_stream_of_its_channel(
    redis_client, redis_url, channel_prefix
):
    env = {"REDIS_URL": redis_url, "EVENT_CHANNEL_PATTERN": f"{channel_prefix}:*"}
    stream = f"{channel_prefix}:order:created"
    try:
        result = run("publish", "--stream", env=env)
        assert result.returncode == 0, result.stderr
        assert f"added order.created to stream {stream} (entry " in result.stdout
        [(_, fields)] = redis_client.xrange(stream)
        assert orjson.loads(fields[b"data"])["tenant_id"] == "test-tenant"
        result = run("publish", "--stream", "--raw", "--channel", stream, "--event", "{", env=env)
        assert result.stdout.strip() == f"added 1 raw message(s) to stream {stream}"
        assert redis_client.xrange(stream)[-1][1] == {b"data": b"{"}
    finally:
        redis_client.delete(stream)


def test_publish_warns_when_nobody_listens(redis_url, channel_prefix):
    env = {"REDIS_URL": redis_url, "EVENT_CHANNEL_PATTERN": f"{channel_prefix}-nobody:*"}
    result = run("publish", env=env)
    assert result.returncode == 0
    assert "0 subscriber(s)" in result.stdout
    assert "nobody is subscribed" in result.stderr


def test_simulate_publishes_the_requested_stream(listener, redis_url, channel_prefix):
    env = {"REDIS_URL": redis_url, "EVENT_CHANNEL_PATTERN": f"{channel_prefix}:*"}
    # A fixed seed: which types 600 events reach depends on it (seed 0 reaches 10 or more).
    result = run(
        "simulate", "--count", "600", "--rate", "0", "--tenants", "3", "--seed", "0", env=env
    )
    assert result.returncode == 0, result.stderr
    assert "published 600 events for 3 tenant(s)" in result.stdout
    wait_for(lambda: len(listener) == 600, timeout=10, what="600 messages")
    types = {orjson.loads(data)["event_type"] for _, data in listener}
    assert len(types) >= 10
    for channel, data in listener:
        category, action = orjson.loads(data)["event_type"].split(".")
        assert channel.decode() == f"{channel_prefix}:{category}:{action}"


def start_up(
    tmp_path, redis_url: str, channel_prefix: str, *args: str
) -> tuple[subprocess.Popen[bytes], Path, dict[str, str]]:
    """`analytics up --concurrency 1 ARGS` on a SQLite file in tmp_path: (process, log, env)."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'analytics.db'}",
        "REDIS_URL": redis_url,
        "EVENT_CHANNEL_PATTERN": f"{channel_prefix}:*",
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "analytics", "up", "--concurrency", "1", *args],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return process, log_path, env


@pytest.mark.slow
def test_up_runs_the_whole_pipeline_on_sqlite_and_stops_cleanly(
    tmp_path, redis_url, channel_prefix
):
    database = tmp_path / "analytics.db"
    process, log_path, env = start_up(tmp_path, redis_url, channel_prefix)
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
    # Killed or not, `up` must not leave its children behind.
    pids = [int(pid) for pid in re.findall(r"started \w+ \(pid (\d+)\)", output)]
    wait_for(lambda: not any(_alive(pid) for pid in pids), timeout=30, what="up's children to exit")
    for name in ("bridge", "beat", "worker"):
        assert len(re.findall(rf"stopped {name} \(exit code -?\d+\)", output)) == 1, output
    assert len(pids) == 3


# ------------------------------------------------------------ report, backfill


@pytest.fixture
def filled(sqlite_url):
    """A SQLite database holding two days of simulated events for two tenants."""
    from datetime import datetime

    from analytics.db import make_engine
    from loadgen import Simulator
    from tests.analytics.helpers import apply, to_event

    engine = make_engine(sqlite_url)
    documents = Simulator(tenants=2, seed=4, start=datetime(2024, 3, 4), days=2).events(800)
    apply(engine, [to_event(d) for d in documents])
    engine.dispose()
    return {"DATABASE_URL": sqlite_url}


def test_report_names_in_help_are_the_reports_that_exist():
    from analytics.cli.reports import REPORT_NAMES
    from analytics.reports import REPORTS

    assert tuple(REPORTS) == REPORT_NAMES


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "--tenant", "t"], "Error: unknown report 'nope'; choose from revenue-by-day, "),
        (["dau"], "Error: --tenant is required: every report is for one tenant"),
        (["dau", "--tenant", "t", "--since", "2024-02-30"], "Error: --since '2024-02-30' is not a date (YYYY-MM-DD)"),
        (["dau", "--tenant", "t", "--since", "2024-03-02", "--until", "2024-03-01"], "Error: --since 2024-03-02 is after --until 2024-03-01"),
    ],
)  # fmt: skip
def test_report_mistakes_are_one_line_errors(filled, args, message):
    result = run("report", *args, env=filled)
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(message)


def test_report_json_is_one_array_and_nothing_else(filled):
    result = run("report", "revenue-by-day", "--tenant", "tenant-1", "--format", "json", env=filled)
    assert result.returncode == 0, result.stderr
    rows = orjson.loads(result.stdout)
    assert isinstance(rows, list) and rows
    assert list(rows[0]) == ["date", "currency", "revenue", "orders", "refunds", "net_revenue"]
    assert [r["date"] for r in rows] == sorted((r["date"] for r in rows), reverse=True)


def test_report_csv_has_a_header_and_table_is_aligned(filled):
    csv_out = run(
        "report", "payments", "--tenant", "tenant-1", "--format", "csv", env=filled
    ).stdout
    lines = csv_out.strip().splitlines()
    assert lines[0] == "date,processed,failed,refunded,failure_rate"
    assert len(lines) == 3  # two days
    table = run("report", "payments", "--tenant", "tenant-1", env=filled).stdout.splitlines()
    assert table[0].split() == ["date", "processed", "failed", "refunded", "failure_rate"]
    assert set(table[1]) == {"-", " "}
    assert len({len(line) for line in table[:2]}) == 1


def test_money_prints_with_two_decimals_in_csv_and_table_and_as_numbers_in_json(filled):
    args = ("report", "revenue-by-day", "--tenant", "tenant-1")
    rows = orjson.loads(run(*args, "--format", "json", env=filled).stdout)
    csv_lines = run(*args, "--format", "csv", env=filled).stdout.strip().splitlines()
    table = run(*args, env=filled).stdout.splitlines()
    assert len(csv_lines) == len(rows) + 1 and len(table) == len(rows) + 2
    for row, line, printed in zip(rows, csv_lines[1:], table[2:], strict=True):
        assert isinstance(row["revenue"], int | float)
        money = [f"{row[k]:.2f}" for k in ("revenue", "refunds", "net_revenue")]
        assert line.split(",") == [
            row["date"],
            row["currency"],
            money[0],
            str(row["orders"]),
            *money[1:],
        ]
        assert printed.split() == line.split(",")


def test_a_tenant_without_data_gets_a_hint_on_stderr(filled):
    result = run("report", "dau", "--tenant", "tenant-x", "--format", "json", env=filled)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert result.stderr.strip() == (
        "no events stored for tenant 'tenant-x'; tenants with data: tenant-1, tenant-2"
    )
    known = run("report", "dau", "--tenant", "tenant-1", "--since", "2030-01-01", env=filled)
    assert "(no rows)" in known.stdout and known.stderr == ""


@pytest.fixture
def unmigrated_postgres(postgres_url):
    """The run's database seen through an empty schema: PostgreSQL without our tables."""
    engine = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("CREATE SCHEMA unmigrated"))
    try:
        yield postgres_url.replace("postgresql+psycopg2://", "postgres://") + (
            "?options=-csearch_path%3Dunmigrated"
        )
    finally:
        with engine.connect() as conn:
            conn.execute(text("DROP SCHEMA unmigrated CASCADE"))
        engine.dispose()


@pytest.mark.parametrize("store", ["postgresql", "sqlite"])
def test_a_database_without_tables_says_run_migrate_in_one_line(store, request, tmp_path):
    if store == "sqlite":
        url = f"sqlite:///{tmp_path / 'empty.db'}"
    else:
        url = request.getfixturevalue("unmigrated_postgres")
    result = run("report", "dau", "--tenant", "t", env={"DATABASE_URL": url})
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("Error: report failed: ")
    assert result.stderr.strip().endswith("(the database is not migrated: run `analytics migrate`)")


def test_backfill_rollups_here_recomputes_every_tenant_day(filled):
    result = run(
        "backfill",
        "rollups",
        "--since",
        "2024-03-04",
        "--until",
        "2024-03-05",
        "--here",
        env=filled,
    )
    assert result.returncode == 0, result.stderr
    assert "recomputed 4 tenant-days for 2 tenant(s)" in result.stdout
    dau = orjson.loads(
        run("report", "dau", "--tenant", "tenant-2", "--format", "json", env=filled).stdout
    )
    assert [row["date"] for row in dau] == ["2024-03-04", "2024-03-05"]


def test_backfill_rebuild_reports_what_it_replayed(filled):
    before = run(
        "report", "revenue-by-day", "--tenant", "tenant-1", "--format", "json", env=filled
    ).stdout
    result = run(
        "backfill",
        "rebuild",
        "--tenant",
        "tenant-1",
        "--since",
        "2024-03-04",
        "--until",
        "2024-03-04",
        env=filled,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("rebuilt tenant-1 2024-03-04..2024-03-04: ")
    after = run(
        "report", "revenue-by-day", "--tenant", "tenant-1", "--format", "json", env=filled
    ).stdout
    assert orjson.loads(after) == orjson.loads(before)


def test_deadletters_list_and_replay_from_the_shell(sqlite_url):
    from datetime import datetime

    from sqlalchemy.orm import Session

    from analytics.db import make_engine
    from analytics.deadletters import Rejected, record_dead_letters

    engine = make_engine(sqlite_url)
    good = b'{"event_id": "fixed", "event_type": "user.logged_in", "tenant_id": "t"}'
    with Session(engine) as session, session.begin():
        record_dead_letters(
            session,
            [
                Rejected("events:user:x", raw, datetime(2024, 3, 1), "was bad")
                for raw in (b"{nope", good)
            ],
        )
    engine.dispose()
    env = {"DATABASE_URL": sqlite_url}
    listed = orjson.loads(run("deadletters", "list", "--format", "json", env=env).stdout)
    assert [(r["id"], r["channel"], r["error"]) for r in listed] == [
        (1, "events:user:x", "was bad"),
        (2, "events:user:x", "was bad"),
    ]
    assert run("deadletters", "replay", env=env).returncode == 2
    replayed = run("deadletters", "replay", "--all", env=env)
    assert replayed.stdout.strip() == "replayed: 1 ingested, 0 already counted, 1 still invalid"
    pending = orjson.loads(
        run("deadletters", "list", "--pending", "--format", "json", env=env).stdout
    )
    assert [r["id"] for r in pending] == [1]
    assert pending[0]["error"].startswith("invalid JSON")
    missing = run("deadletters", "replay", "2", env=env)
    assert missing.returncode == 1 and "no pending dead letter with id 2" in missing.stderr


def test_backfill_replay_republishes_a_file_on_each_events_channel(
    listener, redis_url, channel_prefix, tmp_path
):
    lines = [
        {"event_id": "a", "event_type": "order.created", "tenant_id": "t"},
        {"event_id": "b", "event_type": "inventory.low_stock", "tenant_id": "t"},
    ]
    path = tmp_path / "export.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n\n")
    env = {"REDIS_URL": redis_url, "EVENT_CHANNEL_PATTERN": f"{channel_prefix}:*"}
    result = run("backfill", "replay", str(path), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "published 2 events"
    wait_for(lambda: len(listener) == 2, timeout=5)
    assert [(c.decode(), orjson.loads(d)["event_id"]) for c, d in listener] == [
        (f"{channel_prefix}:order:created", "a"),
        (f"{channel_prefix}:inventory:low_stock", "b"),
    ]


@pytest.mark.slow
def test_up_killed_outright_leaves_no_process_behind(tmp_path, redis_url, channel_prefix):
    process, log_path, _ = start_up(tmp_path, redis_url, channel_prefix, "--no-beat")
    wait_for(lambda: "subscribed to" in log_path.read_text(), timeout=60, what="the bridge")
    pids = [int(pid) for pid in re.findall(r"started \w+ \(pid (\d+)\)", log_path.read_text())]
    assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    process.kill()
    process.wait()
    wait_for(lambda: not any(_alive(pid) for pid in pids), timeout=60, what="the orphans to exit")


# ------------------------------------------------------------- up --metrics-port


def test_up_gives_the_bridge_base_and_the_worker_base_plus_one():
    from analytics.cli.processes import up_commands

    specs = dict(up_commands(2, False, 9300, "0.0.0.0"))
    parsed = {
        name: main.commands[name].make_context(name, argv[4:]) for name, argv in specs.items()
    }
    assert parsed["bridge"].params["metrics_port"] == 9300
    assert parsed["worker"].params["metrics_port"] == 9301
    assert parsed["bridge"].params["metrics_host"] == parsed["worker"].params["metrics_host"]
    assert parsed["worker"].params["metrics_host"] == "0.0.0.0"
    assert parsed["worker"].args == ["--concurrency", "2"]  # passed on to Celery
    assert "--metrics-port" not in specs["beat"]
    off = dict(up_commands(2, True, None, "127.0.0.1"))
    assert set(off) == {"worker", "bridge"}
    assert not any("--metrics-port" in argv for argv in off.values())
    too_high = CliRunner().invoke(main, ["up", "--metrics-port", "65535"])
    assert too_high.exit_code == 2 and "65535 is not in the range" in too_high.output


def free_port_pair() -> int:
    """A port BASE such that BASE and BASE+1 are both free now (bound together to check)."""
    import socket

    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            base = first.getsockname()[1]
            if base >= 65534:
                continue
            try:
                second.bind(("127.0.0.1", base + 1))
            except OSError:
                continue
            return base
    pytest.fail("no two consecutive free ports on 127.0.0.1")


@pytest.mark.slow
def test_up_serves_the_bridge_and_worker_metrics_on_base_and_base_plus_one(
    tmp_path, redis_url, channel_prefix
):
    import httpx

    base = free_port_pair()
    process, log_path, _ = start_up(
        tmp_path, redis_url, channel_prefix, "--no-beat", "--metrics-port", str(base)
    )
    try:
        wait_for(lambda: "subscribed to" in log_path.read_text(), timeout=60, what="the bridge")
        wait_for(lambda: "ready." in log_path.read_text(), timeout=60, what="the worker")
        output = log_path.read_text()
        assert (
            f"metrics: bridge http://127.0.0.1:{base}/metrics, "
            f"worker http://127.0.0.1:{base + 1}/metrics"
        ) in output
        bridge = httpx.get(f"http://127.0.0.1:{base}/metrics")
        worker = httpx.get(f"http://127.0.0.1:{base + 1}/metrics")
        assert bridge.status_code == worker.status_code == 200
        assert "analytics_bridge_reconnects_total" in bridge.text
        assert "analytics_queue_depth" in worker.text
        assert "analytics_bridge_" not in worker.text
    finally:
        print(log_path.read_text()[-4000:])  # shown by pytest only when the test fails
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(timeout=90) == 0
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

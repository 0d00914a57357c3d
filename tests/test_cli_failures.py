"""Every command, with a service down, a database without tables or a bad URL: one line on
stderr naming what is wrong and what to do, and exit status 1 (never a traceback)."""

from __future__ import annotations

import pytest

from tests.test_cli import filled, run, unmigrated_postgres  # noqa: F401 - fixtures used below

CLOSED = "127.0.0.1:1"  # nothing listens on port 1
DAYS = ["--since", "2024-01-01", "--until", "2024-01-02"]

DATABASE_COMMANDS = {
    "report": ["report", "dau", "--tenant", "t"],
    "deadletters list": ["deadletters", "list"],
    "deadletters replay": ["deadletters", "replay", "--all"],
    "backfill rollups --here": ["backfill", "rollups", "--here", *DAYS],
    "backfill rebuild": ["backfill", "rebuild", "--tenant", "t", *DAYS],
    "keys list": ["keys", "list"],
    "keys create": ["keys", "create", "--tenant", "t", "--name", "n"],
}
REDIS_COMMANDS = {
    "publish": ["publish"],
    "publish --stream": ["publish", "--stream"],
    "simulate": ["simulate", "--count", "10", "--rate", "0"],
    "backfill replay": ["backfill", "replay", "{file}"],
    "bench": ["bench", "--count", "10"],
}


def _with_file(args: list[str], tmp_path) -> list[str]:
    """``args`` with ``{file}`` replaced by a JSON-lines file of one event."""
    path = tmp_path / "events.jsonl"
    path.write_text('{"event_type": "order.created", "tenant_id": "t", "data": {}}\n')
    return [arg.replace("{file}", str(path)) for arg in args]


def one_line(args: list[str], env: dict[str, str]) -> str:
    result = run(*args, env=env, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


@pytest.mark.parametrize("name", DATABASE_COMMANDS)
def test_with_the_database_down(name):
    url = f"postgresql://analytics@{CLOSED}/analytics"
    line = one_line(DATABASE_COMMANDS[name], {"DATABASE_URL": url})
    assert f"cannot reach the database at postgresql+psycopg2://***@{CLOSED}/analytics" in line
    assert line.endswith("is it running?")


@pytest.mark.parametrize("name", DATABASE_COMMANDS)
def test_with_a_database_without_tables(name, unmigrated_postgres):  # noqa: F811
    line = one_line(DATABASE_COMMANDS[name], {"DATABASE_URL": unmigrated_postgres})
    assert line.endswith("run `analytics migrate`)"), line


@pytest.mark.parametrize("name", DATABASE_COMMANDS)
def test_with_a_database_url_of_no_known_driver(name):
    line = one_line(DATABASE_COMMANDS[name], {"DATABASE_URL": "oracle+nodriver://x/y"})
    assert "oracle+nodriver://x/y" in line and "database URL" in line


@pytest.mark.parametrize("name", REDIS_COMMANDS)
def test_with_redis_down(name, tmp_path):
    env = {"REDIS_URL": f"redis://{CLOSED}/0", "DATABASE_URL": f"sqlite:///{tmp_path}/a.db"}
    line = one_line(_with_file(REDIS_COMMANDS[name], tmp_path), env)
    assert f"cannot reach Redis at redis://{CLOSED}/0" in line, line
    assert line.endswith("is it running?")


@pytest.mark.parametrize("name", REDIS_COMMANDS)
def test_with_a_redis_url_that_is_not_redis(name, tmp_path):
    env = {"REDIS_URL": "http://localhost:6379/0", "DATABASE_URL": f"sqlite:///{tmp_path}/a.db"}
    line = one_line(_with_file(REDIS_COMMANDS[name], tmp_path), env)
    assert "REDIS_URL='http://localhost:6379/0' is not a Redis URL" in line, line


def test_a_backfill_with_the_broker_down_is_one_line(filled):  # noqa: F811
    env = {**filled, "CELERY_BROKER_URL": f"redis://{CLOSED}/0"}
    line = one_line(["backfill", "rollups", "--since", "2024-03-04", "--until", "2024-03-05"], env)
    assert f"redis://{CLOSED}/0" in line and line.endswith("is it running?"), line

"""LOG_FORMAT=json: one JSON object per line in every process, task fields inside tasks,
Celery's per-task lines only at DEBUG."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import pytest
from celery import Celery

from analytics import logs
from analytics.config import Settings
from analytics.errors import ConfigError
from tasks.app import make_app
from tests.conftest import wait_for
from tests.test_cli import run


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in logs.PER_TASK_LOGGERS}
    yield
    root.handlers[:], level = saved
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)


def _lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_carry_level_logger_message_and_the_traceback(
    monkeypatch, capsys, restore_logging
):
    monkeypatch.setenv("LOG_FORMAT", "json")
    logs.configure("INFO")
    log = logging.getLogger("analytics.test")
    log.debug("hidden at INFO")
    log.info("stored %d events", 3)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    first, second = _lines(capsys.readouterr().err)
    assert {k: first[k] for k in ("level", "logger", "message")} == {
        "level": "INFO",
        "logger": "analytics.test",
        "message": "stored 3 events",
    }
    assert first["time"].endswith("+00:00") and isinstance(first["process"], int)
    assert "task_id" not in first
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exception"]


def test_inside_a_task_each_line_names_the_task_and_its_queue(monkeypatch, capsys, restore_logging):
    monkeypatch.setenv("LOG_FORMAT", "json")
    logs.configure("INFO")
    app = Celery("log-test", set_as_current=False)

    @app.task(name="log.test")
    def noisy() -> None:
        logging.getLogger("analytics.test").info("inside")

    result = noisy.apply(routing_key="order")
    (line,) = _lines(capsys.readouterr().err)
    assert line["message"] == "inside"
    assert (line["task_id"], line["task"], line["queue"]) == (result.id, "log.test", "order")


def test_text_stays_the_default_and_an_unknown_format_is_refused(monkeypatch):
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    assert logs.log_format() == "text"
    with pytest.raises(ConfigError, match="LOG_FORMAT='xml' is not one of text, json"):
        logs.log_format({"LOG_FORMAT": "xml"})
    result = run("migrate", env={"LOG_FORMAT": "xml"})
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: LOG_FORMAT='xml' is not one of text, json"


def test_a_command_logs_json_lines(tmp_path):
    result = run(
        "migrate", env={"LOG_FORMAT": "json", "DATABASE_URL": f"sqlite:///{tmp_path}/a.db"}
    )
    assert result.returncode == 0, result.stderr
    lines = _lines(result.stderr)
    assert any(line["message"].startswith("Running upgrade 0007 -> 0008") for line in lines)
    assert result.stdout.startswith("database is at schema revision")


def _batch(tenant: str, n: int) -> list[list[Any]]:
    document = {
        "event_id": f"{tenant}-{n}",
        "event_type": "order.created",
        "tenant_id": tenant,
        "timestamp": "2024-05-01T10:15:00Z",
        "data": {"order_id": f"o-{n}", "total_amount": 2, "currency": "EUR"},
    }
    return [["events:order:created", orjson.dumps(document).decode(), time.time()]]


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_broker")
@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_a_worker_logs_json_and_per_task_lines_only_at_debug(
    level, pg, start_worker, pipeline_env, redis_url
):
    env = {**pipeline_env, "LOG_FORMAT": "json", "LOG_TASKS": ""}
    worker = start_worker("--loglevel", level, env=env)
    app = make_app(Settings.from_env({"REDIS_URL": redis_url}))
    try:
        for n in range(3):
            app.send_task("order.created", args=[_batch(f"logs-{level}", n)], queue="order")
    finally:
        app.close()
    with pg.connect() as conn:
        from sqlalchemy import text

        def stored() -> bool:
            query = text("SELECT count(*) FROM events WHERE tenant_id = :t")
            return conn.execute(query, {"t": f"logs-{level}"}).scalar_one() == 3

        wait_for(stored, timeout=30, what="3 stored events")
    time.sleep(0.5)
    lines = _lines(worker.output())
    assert any("ready" in line["message"] for line in lines)
    succeeded = [line for line in lines if "succeeded" in line["message"]]
    if level == "INFO":
        assert succeeded == []
        assert not any("received" in line["message"] for line in lines)
    else:  # as with LOG_TASKS=1 at INFO
        assert len(succeeded) == 3
        assert all(line["logger"] == "celery.app.trace" for line in succeeded)


@pytest.mark.parametrize(
    ("level", "log_tasks", "shown"),
    [("INFO", "", False), ("INFO", "1", True), ("DEBUG", "", True), ("WARNING", "1", False)],
)
def test_per_task_lines_show_at_debug_or_with_log_tasks(
    level, log_tasks, shown, monkeypatch, restore_logging
):
    monkeypatch.setenv("LOG_TASKS", log_tasks)
    logs.configure(level)
    for name in logs.PER_TASK_LOGGERS:
        assert logging.getLogger(name).isEnabledFor(logging.INFO) is shown

"""Logging for every process: a text line for people, or one JSON object a line for programs.

``LOG_FORMAT=json`` makes every process (the commands, the bridge, workers, beat, serve) write
one JSON object per line on stderr: ``time``, ``level``, ``logger``, ``message``, ``process``,
inside a Celery task also ``task_id``, ``task`` and ``queue``, and ``exception`` with the
traceback when there is one. Messages carry counts, ids and reasons, never event content.

Celery writes two lines for every task (received, succeeded with its counts); at INFO they
would be most of a busy worker's log, so they are shown at DEBUG only (``--loglevel DEBUG``),
or with ``LOG_TASKS=1`` (the benchmarks and fault tests read them).
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from analytics.errors import ConfigError

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"
#: Celery's loggers that write a line for every task received and finished.
PER_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the running Celery task's id, name and queue."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        entry.update(_task_fields())
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def _task_fields() -> dict[str, Any]:
    """The running Celery task's id, name and queue, if this is a worker inside a task."""
    celery_state = sys.modules.get("celery._state")
    task = celery_state.get_current_task() if celery_state is not None else None
    if task is None or task.request.id is None:
        return {}
    delivery = task.request.delivery_info or {}
    return {
        "task_id": task.request.id,
        "task": task.name,
        "queue": delivery.get("routing_key") or delivery.get("exchange"),
    }


def log_format(env: dict[str, str] | os._Environ[str] | None = None) -> str:
    """LOG_FORMAT (text or json), refused in one line when it is neither."""
    value = ((os.environ if env is None else env).get("LOG_FORMAT") or "text").lower()
    if value not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT={value!r} is not one of {', '.join(LOG_FORMATS)}")
    return value


def configure(level: int | str = "INFO") -> None:
    """Send every logger's records to stderr in LOG_FORMAT, at ``level`` and above."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    shown = root.level <= logging.DEBUG or os.environ.get("LOG_TASKS", "") in {"1", "true", "yes"}
    per_task = logging.NOTSET if shown else logging.WARNING
    for name in PER_TASK_LOGGERS:
        logging.getLogger(name).setLevel(per_task)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # Python's warnings (Celery's about running as root, say) become records like the rest.
    logging.captureWarnings(True)
